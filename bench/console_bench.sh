#!/usr/bin/env bash
# The console shield's cost, in one run: programs writing much to stdout, natively and under
# `scone run --console-key-file` (every write sealed into records), stdout redirected to a file
# (records of up to 64 KiB) or to a pipe (records of up to 64 KiB under the pipe's lock):
#   - seq 1000000                       (stdio, 4 KiB writes, 6.9 MB)
#   - python3 printing 200000 lines      (its buffered stdout, 8 KiB writes)
#   - python3 printing 50000 lines, each flushed  (one small write, so one record, per line)
#   - yes | head -c 1G                   (head's 4 KiB writes: throughput; the issue's row)
# and the AES-256-GCM rate of one core (`openssl speed`), the limit of a sealed stream.
# Prints ratios measured in one run; never passes or fails on a time.
# usage: bench/console_bench.sh SCONE
set -euo pipefail
scone="$(realpath "$1")"
PY=/usr/bin/python3
work="$(mktemp -d /dev/shm/scone-console-XXXXXX)"
trap 'rm -rf "$work"' EXIT
cd "$work"
"$scone" console keygen key 2>/dev/null
unset PYTHONUNBUFFERED  # the program's own buffering, as in a container

rounds=5
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }
seconds() {  # seconds OUT CMD...: wall-clock seconds of one run, stdout to OUT (a file, or "pipe")
  local out="$1" t0 t1
  shift
  t0=$(date +%s%N)
  if [[ "$out" == pipe ]]; then "$@" 2>/dev/null | cat > /dev/null; else "$@" > "$out" 2>/dev/null; fi
  t1=$(date +%s%N)
  echo "scale=4; ($t1 - $t0) / 1000000000" | bc
}
w_seq() { seq 1000000; }
w_print() { "$PY" -c 'for i in range(200000): print("line", i, "of the program output")'; }
w_flushed() { "$PY" -c 'for i in range(50000): print("line", i, "of the program output", flush=True)'; }
w_yes() { yes | head -c 1G; }
export -f w_seq w_print w_flushed w_yes
export PY

declare -A t size
for w in w_seq w_print w_flushed w_yes; do
  for out in file pipe; do
    native=() shielded=()
    for _ in $(seq 1 $rounds); do
      native+=("$(seconds "${out/file/$work/native.out}" bash -c "$w")")
      shielded+=("$(seconds "${out/file/$work/sealed.out}" "$scone" run --console-key-file key -- bash -c "$w")")
    done
    t[$w/$out/native]=$(median "${native[@]}")
    t[$w/$out/shielded]=$(median "${shielded[@]}")
  done
  size[$w/native]=$(stat -c %s native.out)
  size[$w/sealed]=$(stat -c %s sealed.out)
  "$scone" console decrypt --key-file key sealed.out 2>/dev/null | cmp -s - native.out || echo "note: $w: decrypted output differs from native" >&2
  rm -f native.out sealed.out
done

# One core's AES-256-GCM rate on 4 KiB and 16 KiB blocks (bytes per second).
aes_rate() {
  openssl speed -evp aes-256-gcm -bytes "$1" -seconds 2 2>/dev/null | awk 'tolower($1) == "aes-256-gcm" {v=$NF; sub(/k$/, "", v); printf "%d\n", v * 1000}'
}
aes4k=$(aes_rate 4096)
aes16k=$(aes_rate 16384)

ratio() { echo "scale=3; $1 / $2" | bc; }
mbps() { echo "scale=1; $1 / $2 / 1000000" | bc; }
echo "== console shield: stdout sealed vs native (median of $rounds alternating rounds) =="
printf '%-26s %-5s %10s %10s %10s %12s %12s %14s\n' workload to native shielded ratio "native MB/s" "sealed MB/s" "sealed/AES-GCM"
for w in w_seq w_print w_flushed w_yes; do
  for out in file pipe; do
    n=${t[$w/$out/native]} s=${t[$w/$out/shielded]}
    limit=$([[ $out == file ]] && echo "$aes16k" || echo "$aes4k")
    printf '%-26s %-5s %9ss %9ss %10s %12s %12s %14s\n' "${w#w_}" "$out" "$n" "$s" "$(ratio "$n" "$s")" \
      "$(mbps "${size[$w/native]}" "$n")" "$(mbps "${size[$w/native]}" "$s")" \
      "$(ratio "$(echo "${size[$w/native]} / $s" | bc)" "$limit")"
  done
done
printf 'AES-256-GCM, one core: %s MB/s (4 KiB blocks), %s MB/s (16 KiB)\n' "$(mbps "$aes4k" 1)" "$(mbps "$aes16k" 1)"
for w in w_seq w_print w_flushed w_yes; do
  printf 'size on disk %-10s native %12s sealed %12s (x%s)\n' "${w#w_}" "${size[$w/native]}" "${size[$w/sealed]}" \
    "$(ratio "${size[$w/sealed]}" "${size[$w/native]}")"
done
echo "(ratio: native time / shielded time, higher is better, 1 = free; sealed/AES-GCM: the program's plaintext rate"
echo " shielded over one core's AES-256-GCM rate; times include the process start under the runtime)"
