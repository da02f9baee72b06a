# Shared by the runtime's tests (sourced after tests/lib.sh): a fresh encrypted volume in the
# test's work directory, `run` under `scone run` on it, and the checks every case ends with.
# REQUIRES: scone, work, MARKER set; the caller cd'ed into $work.

run() { "$scone" run --volume "$work/vol:$work/key" -- "$@"; }
# run_for SECS PROGRAM...: `run`, killed with every process it started (timeout signals its
# whole process group) if it has not ended after SECS: a hang fails the test, never blocks it.
run_for() {
  local secs="$1"
  shift
  timeout -s KILL "$secs" "$scone" run --volume "$work/vol:$work/key" -- "$@"
}
"$scone" volume create vol --key-file key >/dev/null 2>&1

# No plaintext marker in any file under the volume (only the data of sparse files is read), and
# the volume verifies.
check_volume() {
  /usr/bin/python3 - "$MARKER" vol <<'PYEOF' || fail "plaintext marker found on disk"
import os, sys
marker, found = sys.argv[1].encode(), []
for root, _, names in os.walk(sys.argv[2]):
    for name in names:
        path = os.path.join(root, name)
        if not os.path.isfile(path) or os.path.islink(path):
            continue
        with open(path, "rb") as f:
            fd, at, end = f.fileno(), 0, os.fstat(f.fileno()).st_size
            while at < end:
                try:
                    at = os.lseek(fd, at, os.SEEK_DATA)
                except OSError:
                    break
                stop = os.lseek(fd, at, os.SEEK_HOLE)
                while at < stop:
                    # Overlapping windows so a marker across a boundary is found too.
                    if marker in os.pread(fd, min(1 << 20, stop - at) + len(marker), at):
                        found.append(path)
                        break
                    at += 1 << 20
                at = stop
if found:
    print("\n".join(sorted(set(found))))
    sys.exit(1)
PYEOF
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
