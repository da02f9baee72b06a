# Shared by the runtime's tests (sourced after tests/lib.sh): a fresh encrypted volume in the
# test's work directory, `run` under `scone run` on it, and the checks every case ends with.
# REQUIRES: scone, work, MARKER set; the caller cd'ed into $work.

run() { "$scone" run --volume "$work/vol:$work/key" -- "$@"; }
"$scone" volume create vol --key-file key >/dev/null 2>&1

# No plaintext marker in any file under the volume, and the volume verifies.
check_volume() {
  if grep -r -a -l -- "$MARKER" vol; then fail "plaintext marker found on disk"; fi
  "$scone" volume verify vol --key-file key >/dev/null || fail "verify failed after the program"
}
# Flip one byte of a protected file's ciphertext; the program's read must fail with EIO.
check_tamper() {  # check_tamper FILE-IN-VOLUME
  local f="vol/$1" off=5000
  local b; b=$(xxd -p -s "$off" -l 1 "$f")
  printf "%02x" $((0x$b ^ 1)) | xxd -r -p | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
  set +e
  run cat "$f" >out 2>err
  local rc=$?
  set -e
  [[ $rc != 0 ]] || fail "reading a tampered file succeeded"
  grep -q "Input/output error" err || { cat err; fail "no EIO for a tampered file"; }
  grep -q "^scone: .*$1: chunk [0-9]* fails authentication" err || { cat err; fail "no scone: log line naming the file"; }
}
