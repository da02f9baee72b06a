#!/usr/bin/env bash
# Real multi-process servers and tools on a fresh encrypted volume under `scone run`: PostgreSQL
# (crash and recovery), MariaDB, nginx with two workers, SQLite in WAL mode and LMDB from two
# processes, git, and concurrent O_APPEND writers. Every case ends with no plaintext marker on
# the volume's disk and `scone volume verify` passing.
# usage: servers_test.sh SCONE CASE
# The server packages are installed on first use (SCONE_SERVER_DEPS=1 scripts/install-deps).
# SERVERS_TEST_KEEP=1 keeps the work directory (servers, logs, volume) for a look after a failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib.sh"
scone="$(realpath "$1")"
case_name="$2"
work="$(mktemp -d)"
PY=/usr/bin/python3
MARKER="SCONE-SERVERS-MARKER-$$"
PGBIN=/usr/lib/postgresql/15/bin

# Every server this test started, with all its descendants, ends with the test.
started=()
cleanup() {
  ((${#started[@]} == 0)) || { kill_tree "${started[@]}"; wait "${started[@]}" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
[[ -z "${SERVERS_TEST_KEEP:-}" ]] || trap '((${#started[@]} == 0)) || kill_tree "${started[@]}"; echo "kept $work" >&2' EXIT
cd "$work"

# need PACKAGE...: installs the server packages on first use (serialized: ctest runs cases in
# parallel, and apt waits for a lock another apt holds).
need() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  echo "servers_test: ${missing[*]} missing: installing the server packages (first use)" >&2
  flock /var/lock/scone-server-deps.lock env SCONE_SERVER_DEPS=1 "$here/../../scripts/install-deps" ||
    fail "could not install ${missing[*]} (run SCONE_SERVER_DEPS=1 scripts/install-deps as root)"
}

# wait_until SECS PID WHAT COMMAND...: polls COMMAND until it succeeds (bounded), failing at
# once if PID ended first. No sleep ever stands in for a condition.
wait_until() {
  local deadline=$((SECONDS + $1)) secs="$1" pid="$2" what="$3"
  shift 3
  while ((SECONDS < deadline)); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { show_log; fail "$what: the server ended first"; }
    sleep 0.05
  done
  show_log
  fail "$what: not within $secs s"
}
# wait_gone SECS PID...: until none of the processes exists any more (bounded).
wait_gone() {
  local deadline=$((SECONDS + $1)) secs="$1" p alive
  shift
  while ((SECONDS < deadline)); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.05
  done
  fail "processes $* still running after $secs s"
}
log_file=/dev/null
show_log() { echo "--- last lines of $log_file:" >&2; tail -n 30 "$log_file" >&2 || true; }
# fail_log MESSAGE: fail, showing the server's log first.
fail_log() { show_log; fail "$@"; }

source "$here/volume_lib.sh"
# The volume and its key handed to the user a server runs as (the runtime checkpoints the volume
# as that user), and the work directory traversable by it.
give_volume_to() {
  chmod 755 "$work"
  chown -R "$1:" "$work/vol" "$work/key"
}

case "$case_name" in
postgres)
  need postgresql-15
  give_volume_to postgres
  mkdir sock && chown postgres: sock  # the server's socket and pid file
  runpg() { runuser -u postgres -- "$scone" run --volume "$work/vol:$work/key" -- "$@"; }
  log_file="$work/initdb.log"
  runpg "$PGBIN/initdb" --locale=C -D "$work/vol/pgdata" >initdb.log 2>&1 || fail_log "initdb"
  psql() { "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$work/sock" -U postgres -d postgres "$@"; }
  start_pg() {  # the postmaster under scone run, with 16 buffers: pages are evicted all the time
    log_file="$work/pg.log"
    rm -f sock/pg.pid
    runpg "$PGBIN/postgres" -D "$work/vol/pgdata" -c shared_buffers=128kB -c listen_addresses= \
      -c unix_socket_directories="$work/sock" -c external_pid_file="$work/sock/pg.pid" >>pg.log 2>&1 &
    pg_wrapper=$!
    started+=("$pg_wrapper")
    wait_until 60 "$pg_wrapper" "postgres accepting connections" "$PGBIN/pg_isready" -q -h "$work/sock" -U postgres
    [[ -s sock/pg.pid ]] || fail_log "no external pid file"
    pg_pid="$(head -n1 sock/pg.pid)"
  }
  amcheck() {  # every btree index checked (with heapallindexed) and every table's heap verified
    local out
    out="$(psql -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS amcheck" -c "
      SELECT count(bt_index_check(c.oid, true)) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND c.relpersistence <> 't' AND i.indisvalid" -c "
      SELECT count(*) FROM pg_class c, verify_heapam(c.oid) WHERE c.relkind IN ('r', 'm', 't') AND c.relpersistence <> 't'
      " 2>amcheck.err)" || { cat amcheck.err; fail_log "amcheck"; }
    local indexes problems
    { read -r indexes; read -r problems; } <<<"$out"
    [[ "$indexes" =~ ^[0-9]+$ ]] && ((indexes >= 100)) || fail_log "amcheck checked $indexes btree indexes (the catalog alone has more than 100): $out"
    [[ "$problems" == 0 ]] || fail_log "verify_heapam reported $problems problems"
  }
  start_pg
  "$PGBIN/pgbench" -q -i -s 1 -h "$work/sock" -U postgres postgres >pgbench-init.log 2>&1 ||
    { cat pgbench-init.log; fail_log "pgbench -i"; }
  "$PGBIN/pgbench" -c 2 -j 2 -t 300 -h "$work/sock" -U postgres postgres >pgbench.log 2>&1 ||
    { cat pgbench.log; fail_log "pgbench run"; }
  grep -q "number of transactions actually processed: 600/600" pgbench.log || { cat pgbench.log; fail "pgbench did not process 600 transactions"; }
  [[ "$(psql -c "SELECT count(*) FROM pgbench_history")" == 600 ]] || fail_log "pgbench_history does not hold 600 rows"
  [[ "$(psql -c "SELECT sum(abalance) = (SELECT sum(delta) FROM pgbench_history) FROM pgbench_accounts")" == t ]] ||
    fail_log "account balances do not add up to the history"
  amcheck
  psql -c "CREATE TABLE marker(v text)" -c "INSERT INTO marker VALUES ('$MARKER committed before the crash')" ||
    fail_log "inserting the marker row"
  # A crash: the postmaster and every backend killed at once, nothing shut down.
  kill_tree "$pg_pid"
  wait "$pg_wrapper" || true
  wait_gone 10 "$pg_pid"
  start_pg
  grep -q "database system was interrupted" pg.log || fail_log "postgres did not see a crash"
  grep -q "redo done" pg.log || fail_log "postgres did not replay its WAL"
  [[ "$(psql -c "SELECT v FROM marker")" == "$MARKER committed before the crash" ]] || fail_log "the marker row is lost"
  [[ "$(psql -c "SELECT count(*) FROM pgbench_history")" == 600 ]] || fail_log "pgbench_history lost rows in the crash"
  amcheck
  kill -INT "$pg_pid"  # fast shutdown, which ends with a checkpoint
  wait_gone 60 "$pg_pid"
  wait "$pg_wrapper" || fail_log "postgres exited with an error at shutdown"
  grep -q "database system is shut down" pg.log || fail_log "no clean shutdown"
  check_volume
  ;;

mariadb)
  # As Debian's mariadb.service runs it: everything as user mysql.
  need mariadb-server-core mariadb-client
  # mariadb-server's postinst makes the user; the server's core alone (what is installed) does not.
  id mysql >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mysql
  give_volume_to mysql
  mkdir rundir && chown mysql: rundir  # the server's socket, pid file and log
  runmy() { runuser -u mysql -- "$scone" run --volume "$work/vol:$work/key" -- "$@"; }
  sql() { mariadb -S "$work/rundir/mysql.sock" -u root --batch --skip-column-names "$@"; }
  log_file="$work/install.log"
  runmy mariadb-install-db --no-defaults --datadir="$work/vol/mysql" --skip-test-db >install.log 2>&1 ||
    fail_log "mariadb-install-db"
  start_mariadb() {
    log_file="$work/rundir/mysql.err"
    runmy mariadbd --no-defaults --datadir="$work/vol/mysql" --socket="$work/rundir/mysql.sock" --skip-networking \
      --pid-file="$work/rundir/mysql.pid" --log-error="$log_file" &
    my_pid=$!
    started+=("$my_pid")
    wait_until 60 "$my_pid" "mariadbd accepting connections" mariadb-admin -S "$work/rundir/mysql.sock" -u root ping
  }
  stop_mariadb() {
    mariadb-admin -S "$work/rundir/mysql.sock" -u root shutdown || fail_log "mariadb-admin shutdown"
    wait_gone 60 "$my_pid"
    wait "$my_pid" || fail_log "mariadbd exited with an error"
  }
  start_mariadb
  # io_uring and Linux AIO are refused under the runtime (ENOSYS: they would move data past the
  # shield): InnoDB falls back to synchronous I/O, and says so.
  ! grep -q "InnoDB: Using io_uring\|InnoDB: Using Linux native AIO" rundir/mysql.err || fail_log "InnoDB uses asynchronous I/O"
  grep -q "falling back to innodb_use_native_aio=OFF" rundir/mysql.err || fail_log "InnoDB did not fall back to synchronous I/O"
  sql -e "CREATE DATABASE m; CREATE TABLE m.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(200)) ENGINE=InnoDB;
          INSERT INTO m.t (v) VALUES ('$MARKER first row');
          INSERT INTO m.t (v) SELECT CONCAT('row ', seq, ' ', REPEAT('x', 100)) FROM m.seq_1_to_20000;" ||
    fail_log "creating and filling the table (above)"
  stop_mariadb
  grep -q "Shutdown complete" rundir/mysql.err || fail_log "no clean shutdown"
  start_mariadb
  [[ "$(sql -e "CHECK TABLE m.t" | cut -f3-)" == $'status\tOK' ]] || fail_log "CHECK TABLE: $(sql -e 'CHECK TABLE m.t')"
  [[ "$(sql -e "SELECT v FROM m.t WHERE id = 1")" == "$MARKER first row" ]] || fail_log "the marker row"
  [[ "$(sql -e "SELECT count(*) FROM m.t")" == 20001 ]] || fail_log "rows lost across the restart"
  stop_mariadb
  check_volume
  ;;

nginx | nginx-one-user)
  # nginx: the master as root and the workers as www-data, as deployed; nginx-one-user: master
  # and workers as www-data (the same processes, without a change of user between them).
  need nginx curl
  mkdir tmp plain
  printf '%s\n' "$MARKER index" >plain/index.html
  head -c 1048576 /dev/urandom >plain/big.bin
  run sh -c "mkdir vol/www && cp plain/index.html plain/big.bin vol/www/" || fail "writing the served files"
  give_volume_to www-data
  chown www-data: tmp
  if [[ "$case_name" == nginx ]]; then
    as_user=() user_line="user www-data;"
  else
    as_user=(runuser -u www-data --) user_line=""
  fi
  nginx_config "$work" "$user_line" "$work/vol/access.log withpid" "unix:$work/tmp/nginx.sock" "$work/vol/www" > nginx.conf
  log_file="$work/tmp/error.log"
  "${as_user[@]}" "$scone" run --volume "$work/vol:$work/key" -- nginx -p "$work/tmp/" -e "$log_file" -c "$work/nginx.conf" &
  nginx_wrapper=$!
  started+=("$nginx_wrapper")
  master() { [[ -s "$work/tmp/nginx.pid" ]] && cat "$work/tmp/nginx.pid"; }
  two_workers() { [[ -S "$work/tmp/nginx.sock" && "$(pgrep -c -P "$(master)")" == 2 ]]; }
  wait_until 30 "$nginx_wrapper" "nginx with two workers" two_workers
  # 4 clients at once, 100 requests each (keep-alive), plus 10 of the 1 MiB file (sendfile).
  for c in 1 2 3 4; do
    curl -sf --unix-socket "$work/tmp/nginx.sock" "http://localhost/index.html?m=$MARKER&c=$c&n=[1-100]" >"body.$c" &
  done
  for c in 1 2 3 4; do wait -n || fail_log "curl failed"; done
  curl -sf --unix-socket "$work/tmp/nginx.sock" "http://localhost/big.bin?n=[1-10]" >big.out || fail_log "curl big.bin"
  expected="$(for i in $(seq 1 100); do cat plain/index.html; done)"
  for c in 1 2 3 4; do [[ "$(cat "body.$c")" == "$expected" ]] || fail_log "client $c got wrong content"; done
  [[ "$(sha256sum <big.out)" == "$(for i in $(seq 1 10); do cat plain/big.bin; done | sha256sum)" ]] ||
    fail_log "big.bin served wrong"
  kill -QUIT "$(master)"  # graceful: the workers finish and exit
  wait_gone 30 "$nginx_wrapper"
  wait "$nginx_wrapper" || fail_log "nginx exited with an error"
  ! grep -q "scone:" "$log_file" || fail_log "the runtime logged errors: $(grep -m 3 "scone:" "$log_file")"
  run cat vol/access.log >access.log || fail "reading the access log"
  echo "requests per worker: $(cut -d' ' -f1 access.log | sort | uniq -c | tr -s ' \n' ' ')"
  [[ "$(wc -l <access.log)" == 410 ]] || fail "the access log has $(wc -l <access.log) lines, not 410"
  [[ "$(grep -c "^[0-9]* /index.html?m=$MARKER&c=[1-4]&n=[0-9]* 200 " access.log)" == 400 ]] ||
    fail "the access log does not hold the 400 index requests intact"
  [[ "$(grep -c "^[0-9]* /big.bin?n=[0-9]* 200 1048576$" access.log)" == 10 ]] || fail "the access log does not hold the 10 big.bin requests"
  check_volume
  ;;

sqlite-wal-two-processes)
  # Two processes on one WAL database at once: the -shm file mapped shared by both.
  cat > wal.py <<PYEOF
import sqlite3, subprocess
con = sqlite3.connect("vol/w.db", isolation_level=None)
print(con.execute("pragma journal_mode=wal").fetchone()[0])
con.execute("create table t(v)")
con.execute("insert into t values('$MARKER python')")
# A read transaction held open here while the other process writes: this one keeps its snapshot.
con.execute("begin")
before = con.execute("select count(*) from t").fetchone()[0]
other = subprocess.run(["sqlite3", "vol/w.db", "pragma journal_mode; insert into t values('$MARKER cli'); select count(*) from t;"],
                       capture_output=True, text=True)
print(other.stdout.strip().replace("\n", " "), other.stderr.strip(), other.returncode)
print(before, con.execute("select count(*) from t").fetchone()[0])
con.execute("commit")
print([v for (v,) in con.execute("select v from t order by rowid")])
PYEOF
  expected="wal"$'\n'"wal 2  0"$'\n'"1 1"$'\n'"['$MARKER python', '$MARKER cli']"
  out="$(run_for 60 "$PY" -B wal.py 2>&1)" || true
  [[ "$out" == "$expected" ]] || fail "two processes on one WAL database: $out"
  # Two writers at once, 200 transactions each, waiting on each other's locks.
  for w in a b; do
    { echo ".timeout 20000"; for i in $(seq 1 200); do echo "insert into t values('$MARKER $w $i');"; done; } >"w$w.sql"
  done
  run_for 60 sh -c "sqlite3 vol/w.db < wa.sql & sqlite3 vol/w.db < wb.sql; s=\$?; wait \$! && exit \$s" ||
    fail "two concurrent writers"
  [[ "$(run sqlite3 vol/w.db 'pragma journal_mode; pragma integrity_check; select count(*) from t')" == $'wal\nok\n402' ]] ||
    fail "after two writers: $(run sqlite3 vol/w.db 'pragma journal_mode; pragma integrity_check; select count(*) from t' 2>&1)"
  check_volume
  ;;

lmdb)
  need python3-lmdb lmdb-utils
  # One process keeps the environment open while another reads and writes it (lock.mdb is
  # mapped shared and writable by both).
  cat > lm.py <<PYEOF
import lmdb, subprocess, sys
env = lmdb.open("vol/lmdb", map_size=1 << 24)
with env.begin(write=True) as txn:
    for i in range(1000):
        txn.put(b"key%04d" % i, b"$MARKER value %d" % i)
child = """
import lmdb
env = lmdb.open("vol/lmdb", map_size=1 << 24)
with env.begin(write=True) as txn:
    assert txn.get(b"key0999") == b"$MARKER value 999", txn.get(b"key0999")
    txn.put(b"from-child", b"$MARKER child")
"""
subprocess.run(["$PY", "-c", child], check=True)
with env.begin() as txn:
    print(txn.get(b"from-child").decode(), env.stat()["entries"])
PYEOF
  out="$(run_for 60 "$PY" -B lm.py 2>&1)" || true
  [[ "$out" == "$MARKER child 1001" ]] || fail "two processes on one LMDB environment: $out"
  run mdb_stat vol/lmdb >stat.txt 2>&1 || { cat stat.txt; fail "mdb_stat"; }
  grep -q "Entries: 1001" stat.txt || { cat stat.txt; fail "mdb_stat does not count 1001 entries"; }
  check_volume
  ;;

git)
  need git
  # Objects stored uncompressed (core.compression 0), so that the marker check also covers them.
  cat > gitconfig <<EOF
[user]
  name = SCONE test
  email = test@scone.invalid
[init]
  defaultBranch = main
[core]
  compression = 0
EOF
  export GIT_CONFIG_GLOBAL="$work/gitconfig" GIT_CONFIG_NOSYSTEM=1
  run sh -c "set -e; git init -q vol/repo; cd vol/repo
             for i in \$(seq 1 20); do
               for j in \$(seq 1 20); do echo '$MARKER' commit \$i line \$j; done > file\$((i % 5)).txt
               git add -A; git commit -q -m '$MARKER commit '\$i
             done" >git.log 2>&1 || { cat git.log; fail "git init, add and commit"; }
  [[ "$(run git -C vol/repo rev-list --count HEAD)" == 20 ]] || fail "the repository does not hold 20 commits"
  run git -C vol/repo gc -q >gc.log 2>&1 || { cat gc.log; fail "git gc"; }
  run git -C vol/repo count-objects -v >count.txt || fail "git count-objects"
  grep -q "^count: 0$" count.txt && grep -q "^packs: 1$" count.txt || { cat count.txt; fail "git gc did not pack the objects"; }
  run git -C vol/repo fsck --full --strict >fsck.log 2>&1 || { cat fsck.log; fail "git fsck"; }
  # Out of the volume: hard links fail with EXDEV, as across file systems, so an explicit --local
  # fails as it does natively between file systems, and git's default for a path copies.
  ! run git clone -q --local vol/repo outside-local >clone-out.log 2>&1 || fail "git clone --local out of the volume made hard links"
  grep -q "failed to create link .*: Invalid cross-device link" clone-out.log || { cat clone-out.log; fail "git clone --local out of the volume: not EXDEV"; }
  run git clone -q vol/repo outside >clone-out.log 2>&1 || { cat clone-out.log; fail "git clone out of the volume"; }
  # Into the volume: hard links between protected files.
  run git clone -q --local vol/repo vol/clone >clone.log 2>&1 || { cat clone.log; fail "git clone --local into the volume"; }
  for c in outside vol/clone; do
    run git -C "$c" fsck --full --strict >fsck.log 2>&1 || { cat fsck.log; fail "git fsck of $c"; }
    [[ "$(run git -C "$c" rev-list --count HEAD)" == 20 ]] || fail "$c does not hold 20 commits"
    [[ "$(run cat "$c/file0.txt" | sha256sum)" == "$(run cat vol/repo/file0.txt | sha256sum)" ]] || fail "$c: file0.txt differs"
  done
  grep -rq "$MARKER" outside || fail "the repository's files lack the marker (the disk check would prove nothing)"
  check_volume
  ;;

appends)
  # 4 programs append 100 lines each at once: each opening the file itself with O_APPEND, and
  # all through one O_APPEND descriptor they inherit. Every line must be there once, whole.
  cat > writer.py <<'PYEOF'
import os, sys
fd, start, path, label = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4].encode()
if fd < 0:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
os.read(start, 1)  # returns when the parent closes the pipe: every writer starts at once
for i in range(100):
    os.write(fd, b"%s line %03d\n" % (label, i))
PYEOF
  cat > appends.py <<PYEOF
import os, subprocess, sys
how, path = sys.argv[1], sys.argv[2]
start_r, start_w = os.pipe()
shared = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if how == "inherited" else -1
fds = [start_r] + ([shared] if shared >= 0 else [])
writers = [subprocess.Popen(["$PY", "-B", "writer.py", str(shared), str(start_r), path, "$MARKER w%d" % k], pass_fds=fds)
           for k in range(4)]
os.close(start_w)
assert all(w.wait() == 0 for w in writers)
PYEOF
  expected="$(for k in 0 1 2 3; do for i in $(seq -f %03g 0 99); do echo "$MARKER w$k line $i"; done; done | sort)"
  for how in open inherited; do
    run_for 60 "$PY" -B appends.py "$how" "vol/$how.log" || fail "the writers ($how)"
    run cat "vol/$how.log" >"$how.log" || fail "reading vol/$how.log"
    [[ "$(wc -l <"$how.log")" == 400 ]] || fail "$how: $(wc -l <"$how.log") lines, not 400"
    [[ "$(sort "$how.log")" == "$expected" ]] || fail "$how: lines lost, repeated or torn"
  done
  check_volume
  ;;

*)
  fail "unknown case"
  ;;
esac
echo "ok: $case_name"
