#!/usr/bin/env bash
# The runtime on real programs, measured in one run: fio (psync) natively, under `scone run` on
# an encrypted volume, and on a gocryptfs mount (the FUSE peer), on tmpfs and on disk; sqlite3
# inserts and redis-benchmark (SET/GET, AOF everysec) natively and under the runtime.
# Prints ratios; never passes or fails on a time.
# usage: bench/runtime_bench.sh SCONE [SIZE_MIB]
set -euo pipefail
source "$(cd "$(dirname "$0")/.." && pwd)/tests/lib.sh"
scone="$(realpath "$1")"
size_mib="${2:-256}"
PY=/usr/bin/python3
work_shm="$(mktemp -d /dev/shm/scone-bench-XXXXXX)"
work_disk="$(mktemp -d /var/tmp/scone-bench-XXXXXX)"
mounts=()
cleanup() {
  for m in "${mounts[@]}"; do fusermount3 -u "$m" 2>/dev/null || fusermount -u "$m" 2>/dev/null || true; done
  rm -rf "$work_shm" "$work_disk"
}
trap cleanup EXIT

# fio_mbps DIR RW BS [RUNNER...]: bandwidth in MB/s of one psync job on a file in DIR. The job
# runs as a thread of fio's process (FIO_JOB=process: a forked process, which shares the volume
# with fio's main process: every write is then published to it at once, see
# docs/file-system-shield.md).
fio_mbps() {
  local dir="$1" rw="$2" bs="$3" thread=--thread
  shift 3
  [[ "${FIO_JOB:-thread}" == process ]] && thread=
  "$@" fio --name=job $thread --directory="$dir" --filename=fio.dat --ioengine=psync --rw="$rw" --bs="$bs" \
    --size="${size_mib}m" --runtime=8 --time_based=0 --end_fsync=1 --output-format=json \
    --randrepeat=1 --norandommap 2>/dev/null |
    $PY -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print("%.1f" % ((j["read"]["bw_bytes"]+j["write"]["bw_bytes"])/1e6))'
}

# This VM's speed moves by tens of percent from one second to the next: every measurement is
# taken in alternating rounds and the median round of each side is compared.
rounds=3
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }

declare -A result
run_fs_suite() {  # run_fs_suite LABEL BASE_DIR
  local label="$1" base="$2"
  mkdir -p "$base/native" "$base/gocryptfs.cipher" "$base/gocryptfs"
  "$scone" volume create "$base/vol" --key-file "$base/vol.key" >/dev/null 2>&1
  echo "scone-bench-password" > "$base/pw"
  gocryptfs -q -init -passfile "$base/pw" "$base/gocryptfs.cipher" >/dev/null 2>&1
  gocryptfs -q -nosyslog -passfile "$base/pw" "$base/gocryptfs.cipher" "$base/gocryptfs" && mounts+=("$base/gocryptfs")
  for w in "write 1m" "read 1m" "randwrite 4k" "randread 4k"; do
    set -- $w
    local natives=() scones=() peers=()
    for r in $(seq 1 $rounds); do  # alternating rounds; the median of each is reported
      natives+=("$(fio_mbps "$base/native" "$1" "$2")")
      scones+=("$(fio_mbps "$base/vol" "$1" "$2" "$scone" run --volume "$base/vol:$base/vol.key" --)")
      peers+=("$(fio_mbps "$base/gocryptfs" "$1" "$2")")
      rm -f "$base/native/fio.dat" "$base/gocryptfs/fio.dat"
      "$scone" run --volume "$base/vol:$base/vol.key" -- rm -f "$base/vol/fio.dat"
    done
    result["$label/$1/native"]=$(median "${natives[@]}")
    result["$label/$1/scone"]=$(median "${scones[@]}")
    result["$label/$1/gocryptfs"]=$(median "${peers[@]}")
  done
}

run_fs_suite tmpfs "$work_shm"
run_fs_suite disk "$work_disk"

# The cost of sharing: the same job as a forked process (the volume shared with fio's main
# process) against a thread (the volume alone), under the runtime, on tmpfs.
shared_base="$work_shm/shared"
mkdir -p "$shared_base"
"$scone" volume create "$shared_base/vol" --key-file "$shared_base/vol.key" >/dev/null 2>&1
declare -A sharing
for w in "randwrite 4k" "randread 4k"; do
  set -- $w
  alone=() shared=()
  for r in $(seq 1 $rounds); do
    alone+=("$(fio_mbps "$shared_base/vol" "$1" "$2" "$scone" run --volume "$shared_base/vol:$shared_base/vol.key" --)")
    shared+=("$(FIO_JOB=process fio_mbps "$shared_base/vol" "$1" "$2" "$scone" run --volume "$shared_base/vol:$shared_base/vol.key" --)")
  done
  sharing["$1/alone"]=$(median "${alone[@]}")
  sharing["$1/shared"]=$(median "${shared[@]}")
done

ratio() { $PY -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print('%.2f' % (a/b if b else 0))" "$1" "$2"; }

echo "scone runtime benchmark (fio psync, ${size_mib} MiB file; median of $rounds alternating rounds)"
printf "%-6s %-10s %10s %10s %10s %14s %16s\n" fs workload native scone gocryptfs scone/native scone/gocryptfs
for fs in tmpfs disk; do
  for w in write read randwrite randread; do
    n=${result[$fs/$w/native]} s=${result[$fs/$w/scone]} g=${result[$fs/$w/gocryptfs]}
    printf "%-6s %-10s %7s MB/s %7s MB/s %7s MB/s %14s %16s\n" "$fs" "$w" "$n" "$s" "$g" "$(ratio "$s" "$n")" "$(ratio "$s" "$g")"
  done
done

for w in randwrite randread; do
  a=${sharing[$w/alone]} sh=${sharing[$w/shared]}
  printf "tmpfs  %-10s volume alone %7s MB/s, shared with another process %7s MB/s: shared/alone %s\n" \
    "$w" "$a" "$sh" "$(ratio "$sh" "$a")"
done

# sqlite3: 20,000 inserts in 200 transactions.
{
  echo "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
  for b in $(seq 1 200); do
    echo "BEGIN;"
    for i in $(seq 1 100); do echo "INSERT INTO t(v) VALUES('row-$b-$i-abcdefghijklmnopqrstuvwxyz');"; done
    echo "COMMIT;"
  done
} > "$work_disk/inserts.sql"
seconds() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); $PY -c "print($e-$s)"; }
# Rounds alternate native and shielded, each on a fresh database, so that a slow moment of the
# machine (or the disk still flushing the previous round) does not land on one side only.
t_natives=() t_scones=()
for r in $(seq 1 $rounds); do
  rm -rf "$work_disk/sq" "$work_disk/sqvol" "$work_disk/sq.key"
  mkdir -p "$work_disk/sq"
  "$scone" volume create "$work_disk/sqvol" --key-file "$work_disk/sq.key" >/dev/null 2>&1
  t_natives+=("$(seconds sh -c "sqlite3 '$work_disk/sq/db' < '$work_disk/inserts.sql'")")
  t_scones+=("$(seconds sh -c "'$scone' run --volume '$work_disk/sqvol:$work_disk/sq.key' -- sqlite3 '$work_disk/sqvol/db' < '$work_disk/inserts.sql'")")
done
t_native=$(median "${t_natives[@]}")
t_scone=$(median "${t_scones[@]}")
echo
echo "sqlite3 20,000 inserts in 200 transactions (disk, median of $rounds): native ${t_native}s, scone ${t_scone}s," \
  "scone/native throughput $(ratio "$t_native" "$t_scone")"

# redis-benchmark: SET and GET with AOF everysec.
redis_rps() {  # redis_rps DIR [RUNNER...] -> "set get" requests per second
  local dir="$1"
  shift
  local sock="$work_disk/$(basename "$dir").sock"  # beside the volume, not in it
  : > "$dir-redis.log"
  "$@" redis-server --port 0 --unixsocket "$sock" --dir "$dir" --appendonly yes --appendfsync everysec \
    --save "" --daemonize no --logfile "$dir-redis.log" &
  local pid=$!
  wait_for_line "$dir-redis.log" "ready to accept connections" "$pid"  # outside the volume: readable
  redis-benchmark -s "$sock" -t set,get -n 200000 -c 20 -d 64 --csv 2>/dev/null |
    $PY -c 'import csv,sys; r={row[0]:row[1] for row in csv.reader(sys.stdin)}; print(r.get("SET","0"), r.get("GET","0"))'
  redis-cli -s "$sock" shutdown nosave >/dev/null 2>&1 || true
  wait "$pid" || true
}
n_sets=() n_gets=() s_sets=() s_gets=()
for r in $(seq 1 $rounds); do
  rm -rf "$work_disk/rn" "$work_disk/rvol" "$work_disk/r.key"
  mkdir -p "$work_disk/rn"
  "$scone" volume create "$work_disk/rvol" --key-file "$work_disk/r.key" >/dev/null 2>&1
  read -r a b <<<"$(redis_rps "$work_disk/rn")"
  n_sets+=("$a") n_gets+=("$b")
  read -r a b <<<"$(redis_rps "$work_disk/rvol" "$scone" run --volume "$work_disk/rvol:$work_disk/r.key" --)"
  s_sets+=("$a") s_gets+=("$b")
done
n_set=$(median "${n_sets[@]}") n_get=$(median "${n_gets[@]}")
s_set=$(median "${s_sets[@]}") s_get=$(median "${s_gets[@]}")
echo "redis-benchmark AOF everysec (disk, median of $rounds): SET native $n_set/s scone $s_set/s ratio $(ratio "$s_set" "$n_set");" \
  "GET native $n_get/s scone $s_get/s ratio $(ratio "$s_get" "$n_get")"
