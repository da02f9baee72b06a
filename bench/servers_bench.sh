#!/usr/bin/env bash
# Multi-process servers and many small files under the runtime, measured in one run: `tar -x`
# of /usr/include, a shell's loop of 200 `cp`s (a process each), pgbench (scale 5, 4 clients)
# against PostgreSQL, wrk against nginx (two workers, a 1 KiB file, with an access log beside it
# and without), and two SQLite writers on one WAL database (shared mappings), each natively and
# under `scone run` on an encrypted volume, on disk.
# Rounds alternate native and shielded; the median round of each side is compared. Prints
# throughput ratios (shielded/native: 1.00 is native speed); never passes or fails on a time.
# A side that fails prints its first error lines and "n/a".
# usage: bench/servers_bench.sh SCONE [ROUNDS] [SECONDS]   (SECONDS: per pgbench and wrk run)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
source "$here/tests/lib.sh"
scone="$(realpath "$1")"
rounds="${2:-3}"
secs="${3:-10}"
PY=/usr/bin/python3
PGBIN=/usr/lib/postgresql/15/bin
SCONE_SERVER_DEPS=1 "$here/scripts/install-deps"

work="$(mktemp -d /var/tmp/scone-servers-bench-XXXXXX)"
chmod 755 "$work"
started=()
cleanup() {
  ((${#started[@]} == 0)) || kill_tree "${started[@]}"
  umount "$work/tarfs" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

median() { printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"; }
ratio() { $PY -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print('%.2f' % (a/b) if a and b else 'n/a')" "$1" "$2"; }
seconds_of() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || return 1; e=$(date +%s.%N); $PY -c "print('%.3f' % ($e-$s))"; }
# wait_for SECS PID COMMAND...: polls COMMAND (bounded) while PID lives; status 1 otherwise.
wait_for() {
  local deadline=$((SECONDS + $1)) pid="$2"
  shift 2
  while ((SECONDS < deadline)); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
new_volume() {  # new_volume NAME OWNER: an empty encrypted volume $work/NAME, key $work/NAME.key
  "$scone" volume create "$work/$1" --key-file "$work/$1.key" >/dev/null 2>&1
  chown -R "$2:" "$work/$1" "$work/$1.key"
}
declare -A result error

# --- tar -x of /usr/include (many small files: creates, writes, closes, utimensat) ---
tar -C /usr -cf include.tar include
files=$(tar -tf include.tar | grep -vc '/$')
t_native=() t_scone=()
# Each round extracts into trees of its own, all removed after the last round: on a file system
# without a journal (this machine's root), ext4 passes over inodes freed in the last minutes when
# it allocates new ones (recently_deleted), so a tree removed just before a run made that run
# scan the inode tables (up to 6x slower, native and shielded alike, depending on what lay where).
# Where it can (root, loop devices), each round has a fresh ext4 of its own (an image file on
# the same disk, mounted at tarfs): what both sides then pay is their own work, not what the
# file systems's earlier tenants left (inodes freed by the test suite or an earlier bench).
# A `sync` before each run: a shielded run's close may sync the file system (syncfs), which
# would write back the native run's 130 MB too, charging it to the runtime.
tar_fs=""
tarfs_round() {  # a fresh ext4 at $work/tarfs for round $1, or nothing (the work dir is used)
  umount "$work/tarfs" 2>/dev/null || true
  rm -f "$work/tarfs.img"
  mkdir -p "$work/tarfs"
  truncate -s 4G "$work/tarfs.img" && mkfs.ext4 -q "$work/tarfs.img" 2>/dev/null &&
    mount -o loop "$work/tarfs.img" "$work/tarfs" 2>/dev/null && tar_fs="a fresh ext4 per round" ||
    { tar_fs="the work directory"; return 0; }
}
for r in $(seq 1 "$rounds"); do
  tarfs_round "$r"
  mkdir "tarfs/plain$r"
  new_volume "tarfs/tarvol$r" root
  sync
  t_native+=("$(seconds_of tar -C "tarfs/plain$r" -xf include.tar)")
  sync
  vol="$work/tarfs/tarvol$r:$work/tarfs/tarvol$r.key"
  if t="$(seconds_of "$scone" run --volume "$vol" -- tar -C "$work/tarfs/tarvol$r" -xf include.tar)"; then
    t_scone+=("$t")
  else
    error[tar]="$("$scone" run --volume "$vol" -- tar -C "$work/tarfs/tarvol$r" -xf include.tar 2>&1 | head -n 3)"
  fi
done
umount "$work/tarfs" 2>/dev/null || true
rm -rf tarfs tarfs.img
result[tar/native]=$($PY -c "print('%.0f' % ($files / $(median "${t_native[@]}")))")
[[ ${#t_scone[@]} == 0 ]] || result[tar/scone]=$($PY -c "print('%.0f' % ($files / $(median "${t_scone[@]}")))")

# --- a shell script's commands: 200 `cp`s of a small file, each a process of its own that opens
# the volume, writes and exits (what a program's start, open and exit cost) ---
commands=200
echo "$(date) one line of a small file" > small.txt
t_native=() t_scone=()
for r in $(seq 1 "$rounds"); do
  mkdir "cpplain$r"
  new_volume "cpvol$r" root
  sync
  t_native+=("$(seconds_of bash -c "for i in \$(seq $commands); do cp small.txt cpplain$r/f\$i; done")")
  sync
  if t="$(seconds_of "$scone" run --volume "$work/cpvol$r:$work/cpvol$r.key" -- bash -c "for i in \$(seq $commands); do cp small.txt cpvol$r/f\$i; done")"; then
    t_scone+=("$t")
  else
    error[cp]="$("$scone" run --volume "$work/cpvol$r:$work/cpvol$r.key" -- cp small.txt "cpvol$r/x" 2>&1 | head -n 3)"
  fi
done
rm -rf cpplain[0-9]* cpvol[0-9]*
result[cp/native]=$($PY -c "print('%.0f' % ($commands / $(median "${t_native[@]}")))")
[[ ${#t_scone[@]} == 0 ]] || result[cp/scone]=$($PY -c "print('%.0f' % ($commands / $(median "${t_scone[@]}")))")

# --- pgbench, scale 5, 4 clients, $secs s per run, default settings (fsync on) ---
pg_start() {  # pg_start NAME [RUNNER...]: a server on $work/NAME/pgdata, socket in $work/NAME.run
  local name="$1"
  shift
  mkdir -p "$name.run" && chown postgres: "$name.run"
  runuser -u postgres -- "$@" "$PGBIN/postgres" -D "$work/$name/pgdata" -c listen_addresses= \
    -c unix_socket_directories="$work/$name.run" >"$name.log" 2>&1 &
  local pid=$!
  started+=("$pid")
  disown "$pid"  # ended by kill_tree, never waited for
  wait_for 120 "$pid" "$PGBIN/pg_isready" -q -h "$work/$name.run" -U postgres
}
pg_setup() {  # pg_setup NAME [RUNNER...]: initdb, start, pgbench -i -s 5
  local name="$1"
  runuser -u postgres -- "${@:2}" "$PGBIN/initdb" --locale=C -D "$work/$name/pgdata" >"$name.initdb.log" 2>&1 &&
    pg_start "$@" &&
    "$PGBIN/pgbench" -q -i -s 5 -h "$work/$name.run" -U postgres postgres >"$name.init.log" 2>&1
}
pg_tps() {  # pg_tps NAME: transactions per second of one pgbench run
  "$PGBIN/pgbench" -c 4 -j 2 -T "$secs" -h "$work/$1.run" -U postgres postgres 2>"$1.bench.err" |
    sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}
mkdir pgn && chown postgres: pgn
new_volume pgv postgres
pgn_ok=1 pgv_ok=1
pg_setup pgn || { error[pgbench]="native setup: $(tail -q -n 2 pgn.initdb.log pgn.log pgn.init.log 2>/dev/null || true)"; pgn_ok=0; }
if ! pg_setup pgv "$scone" run --volume "$work/pgv:$work/pgv.key" --; then
  error[pgbench]="shielded setup: $(tail -q -n 3 pgv.initdb.log pgv.log pgv.init.log 2>/dev/null || true)"
  pgv_ok=0
fi
n=() s=()
for r in $(seq 1 "$rounds"); do
  if ((pgn_ok)); then
    v="$(pg_tps pgn)" && [[ -n "$v" ]] && n+=("$v") || error[pgbench]="native run: $(head -n 3 pgn.bench.err)"
  fi
  if ((pgv_ok)); then
    v="$(pg_tps pgv)" && [[ -n "$v" ]] && s+=("$v") || error[pgbench]="shielded run: $(head -n 3 pgv.bench.err)"
  fi
done
[[ ${#n[@]} == 0 ]] || result[pgbench/native]=$(printf %.1f "$(median "${n[@]}")")
[[ ${#s[@]} == 0 ]] || result[pgbench/scone]=$(printf %.1f "$(median "${s[@]}")")
kill_tree "${started[@]}"
wait "${started[@]}" 2>/dev/null || true
started=()

# --- nginx, 2 workers, wrk on a 1 KiB file (access log beside it) ---
port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
nginx_conf() {  # nginx_conf DIR PORT LOG: serves DIR/www; LOG "on": logs to DIR/access.log
  local log="access_log $1/access.log"
  [[ "$3" == on ]] || log="access_log off"
  cat <<EOF
daemon off; master_process on; worker_processes 2; user www-data;
pid $work/$(basename "$1").pid; error_log $work/$(basename "$1").error.log;
events { worker_connections 1024; }
http {
  $log; sendfile on; keepalive_requests 100000;
  client_body_temp_path $work/tmp/body; proxy_temp_path $work/tmp/proxy; fastcgi_temp_path $work/tmp/fastcgi;
  uwsgi_temp_path $work/tmp/uwsgi; scgi_temp_path $work/tmp/scgi;
  types { application/octet-stream bin; }
  server { listen 127.0.0.1:$2; root $1/www; }
}
EOF
}
rps() {  # rps DIR LOG [RUNNER...]: requests per second of wrk against nginx serving DIR/www/f.bin
  local dir="$1" log="$2" p
  shift 2
  p="$(port)"
  nginx_conf "$dir" "$p" "$log" >"$dir.conf"
  "$@" nginx -p "$work/" -e "$dir.error.log" -c "$dir.conf" &
  local pid=$!
  wait_for 30 "$pid" curl -sf -o /dev/null "http://127.0.0.1:$p/f.bin" || { kill_tree "$pid"; wait "$pid" 2>/dev/null; return 1; }
  wrk -t 2 -c 16 -d "${secs}s" "http://127.0.0.1:$p/f.bin" | sed -n 's/^Requests\/sec: *\([0-9.]*\)/\1/p'
  kill -QUIT "$pid"
  wait "$pid" || true
}
mkdir -p tmp ngn/www
head -c 1024 /dev/urandom >ngn/www/f.bin
new_volume ngv www-data
"$scone" run --volume "$work/ngv:$work/ngv.key" -- sh -c "mkdir $work/ngv/www && cp $work/ngn/www/f.bin $work/ngv/www/f.bin"
chown -R www-data: ngn ngv
for log in on off; do
  n=() s=()
  for r in $(seq 1 "$rounds"); do
    v="$(rps "$work/ngn" "$log")" && [[ -n "$v" ]] && n+=("$v") ||
      error[nginx-$log]="native: $(grep -h -m 3 "emerg\|alert\|crit\|error" ngn.error.log || true)"
    if v="$(rps "$work/ngv" "$log" "$scone" run --volume "$work/ngv:$work/ngv.key" --)" && [[ -n "$v" ]]; then
      s+=("$v")
    else
      error[nginx-$log]="$(grep -h -m 3 "emerg\|alert\|crit\|error\|scone:" ngv.error.log 2>/dev/null || true)"
    fi
  done
  [[ ${#n[@]} == 0 ]] || result[nginx-$log/native]=$(printf %.0f "$(median "${n[@]}")")
  [[ ${#s[@]} == 0 ]] || result[nginx-$log/scone]=$(printf %.0f "$(median "${s[@]}")")
done

# --- SQLite in WAL mode: two processes inserting side by side (the -shm file mapped shared) ---
cat > wal.py <<'PYEOF'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
for i in range(int(sys.argv[2])):
    con.execute("insert into t values (?, ?)", (i, "x" * 100))
PYEOF
wal_txns=1000
wal_run() {  # wal_run DIR [RUNNER...]: seconds for two writers of $wal_txns transactions each
  local dir="$1"
  shift
  "$@" sqlite3 "$dir/w.db" "pragma journal_mode=wal; create table t(n, v);" >/dev/null &&
    seconds_of "$@" sh -c "$PY $work/wal.py $dir/w.db $wal_txns & $PY $work/wal.py $dir/w.db $wal_txns; s=\$?; wait \$! && exit \$s"
}
t_native=() t_scone=()
for r in $(seq 1 "$rounds"); do
  rm -rf walp walv walv.key && mkdir walp
  new_volume walv root
  t_native+=("$(wal_run "$work/walp")")
  if t="$(wal_run "$work/walv" "$scone" run --volume "$work/walv:$work/walv.key" --)"; then
    t_scone+=("$t")
  else
    error[sqlite-wal]="shielded run failed"
  fi
done
rm -rf walp walv walv.key
result[sqlite-wal/native]=$($PY -c "print('%.0f' % (2 * $wal_txns / $(median "${t_native[@]}")))")
[[ ${#t_scone[@]} == 0 ]] || result[sqlite-wal/scone]=$($PY -c "print('%.0f' % (2 * $wal_txns / $(median "${t_scone[@]}")))")

echo "scone servers benchmark (disk: $work; median of $rounds alternating rounds; pgbench and wrk ${secs} s each; tar on $tar_fs)"
printf "%-44s %14s %14s %16s\n" workload native shielded shielded/native
row() {  # row LABEL KEY UNIT
  local n="${result[$2/native]:-}" s="${result[$2/scone]:-}"
  printf "%-44s %14s %14s %16s\n" "$1" "${n:-n/a} $3" "${s:-n/a} $3" "$(ratio "${s:-0}" "${n:-0}")"
  [[ -z "${error[$2]:-}" ]] || echo "  $2 failed: ${error[$2]}" | head -n 4
}
row "tar -x /usr/include ($files files)" tar files/s
row "a shell's $commands cp of a small file" cp cmds/s
row "pgbench -s 5 -c 4 -j 2 (TPC-B-like)" pgbench tps
row "nginx 2 workers, wrk -c 16, 1 KiB file" nginx-on req/s
row "  the same, access log off" nginx-off req/s
row "SQLite WAL, 2 writers side by side" sqlite-wal txn/s
