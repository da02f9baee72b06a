#!/usr/bin/env bash
# The cost of the runtime's system-call entry on programs that touch no volume, in one run:
# system-call-heavy work natively and under the runtime with a volume configured.
#   - find /usr -type f | wc -l          (getdents64, openat, newfstatat, fcntl, close by the 100k)
#   - python3 start-up, 20 in a row     (each a new process: the runtime starts, patches, runs)
#   - redis-benchmark SET/GET            (against redis-server under the runtime, no persistence)
# The volume lies on its own file system (/dev/shm, as a container's volume is its own mount),
# and once more on the same file system as /usr (the worst case: stat calls must then prove that
# no symbolic link leads into the volume). Prints ratios; never passes or fails on a time.
# usage: bench/entry_bench.sh SCONE
set -euo pipefail
scone="$(realpath "$1")"
PY=/usr/bin/python3
work="$(mktemp -d /dev/shm/scone-entry-XXXXXX)"
same_fs="$(mktemp -d /var/tmp/scone-entry-XXXXXX)"
redis_pids=()
cleanup() {
  for p in "${redis_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work" "$same_fs"
}
trap cleanup EXIT
"$scone" volume create "$work/vol" --key-file "$work/key" >/dev/null 2>&1
"$scone" volume create "$same_fs/vol" --key-file "$same_fs/key" >/dev/null 2>&1

# This VM's speed moves by tens of percent from one second to the next: every measurement is
# taken in alternating rounds and the median round of each side is compared.
rounds=7
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }
seconds() {  # seconds CMD...: wall-clock seconds of one run
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null 2>&1
  t1=$(date +%s%N)
  echo "scale=4; ($t1 - $t0) / 1000000000" | bc
}
# Inside one `scone run`, so the command-line tool's own start is not counted.
find_usr() { find /usr -type f | wc -l; }
python_starts() { for _ in $(seq 1 20); do "$PY" -c pass; done; }
export -f find_usr python_starts
export PY

declare -A t
for w in find_usr python_starts; do
  native=() tmpfs=() same=()
  for _ in $(seq 1 $rounds); do
    native+=("$(seconds bash -c "$w")")
    tmpfs+=("$(seconds "$scone" run --volume "$work/vol:$work/key" -- bash -c "$w")")
    same+=("$(seconds "$scone" run --volume "$same_fs/vol:$same_fs/key" -- bash -c "$w")")
  done
  t[$w/native]=$(median "${native[@]}")
  t[$w/tmpfs]=$(median "${tmpfs[@]}")
  t[$w/same]=$(median "${same[@]}")
done

# redis: requests per second, median of the rounds; the server's files outside the volume.
redis_rps() {  # redis_rps TEST [RUNNER...]
  local test="$1"
  shift
  local sock="$work/redis.sock" dir="$work/redis-data"
  mkdir -p "$dir"
  rm -f "$sock"
  "$@" redis-server --port 0 --unixsocket "$sock" --save '' --appendonly no --dir "$dir" \
    --logfile "$work/redis.log" &
  local pid=$!
  redis_pids+=("$pid")
  for _ in $(seq 1 200); do [[ -S "$sock" ]] && break; sleep 0.05; done
  redis-benchmark -s "$sock" -q -n 100000 -t "$test" -P 1 -c 8 2>/dev/null | tr '\r' '\n' |
    sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' | tail -1
  redis-cli -s "$sock" shutdown nosave >/dev/null 2>&1 || kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
for test in set get; do
  native=() shielded=()
  for _ in $(seq 1 $rounds); do
    native+=("$(redis_rps "$test")")
    shielded+=("$(redis_rps "$test" "$scone" run --volume "$work/vol:$work/key" --)")
  done
  t[redis_$test/native]=$(median "${native[@]}")
  t[redis_$test/scone]=$(median "${shielded[@]}")
done

ratio() { echo "scale=3; $1 / $2" | bc; }
echo "== the system-call entry's cost, no volume touched (median of $rounds alternating rounds) =="
printf '%-34s %10s %12s %12s %16s %16s\n' workload native "volume-fs" "same-fs" "ratio(own-fs)" "ratio(same-fs)"
for w in find_usr python_starts; do
  printf '%-34s %9ss %11ss %11ss %16s %16s\n' "$w (time)" "${t[$w/native]}" "${t[$w/tmpfs]}" "${t[$w/same]}" \
    "$(ratio "${t[$w/tmpfs]}" "${t[$w/native]}")" "$(ratio "${t[$w/same]}" "${t[$w/native]}")"
done
for test in set get; do
  printf '%-34s %10s %12s %12s %16s\n' "redis $test (requests/s)" "${t[redis_$test/native]}" "${t[redis_$test/scone]}" "-" \
    "$(ratio "${t[redis_$test/scone]}" "${t[redis_$test/native]}")"
done
echo "(time ratios: shielded/native, lower is better; redis: shielded/native throughput, higher is better)"
