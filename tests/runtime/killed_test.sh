#!/usr/bin/env bash
# What a process alone on its volume keeps when it is killed (SIGKILL, the OOM killer, `docker
# kill`) without a sync: natively every write that returned is in the page cache and stays. The
# runtime buffers small writes of a process alone; it publishes them in program order before
# anything after them leaves the process (another file, a reply, a rename), and within a few
# milliseconds otherwise (docs/file-system-shield.md, "Processes killed while writing").
# usage: killed_test.sh SCONE CASE
# After each case: no plaintext marker on disk and `scone volume verify` passes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib.sh"
scone="$1"
case_name="$2"
work="$(mktemp -d)"
victim=""
trap '[[ -z "$victim" ]] || kill -9 "$victim" 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
PY=/usr/bin/python3
MARKER="SCONE-PLAINTEXT-MARKER-$$"
source "$here/volume_lib.sh"

# The programs report progress through a counter in a shared mapping of a file outside the
# volume: a store, no system call, so that reporting publishes nothing (a write to a pipe would).
# wait_for_count N: until the counter reaches N (bounded, while the victim lives).
cat > progress.py <<'PYEOF'
import mmap, os, struct
class Progress:
    def __init__(self, path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(fd, 8)
        self.m = mmap.mmap(fd, 8)
    def set(self, n):
        self.m[0:8] = struct.pack("<q", n)
PYEOF
read_count() { "$PY" -c 'import struct,sys; print(struct.unpack("<q", open(sys.argv[1],"rb").read(8))[0])' "$work/progress"; }
wait_for_count() {
  for _ in $(seq 1 1200); do
    [[ -s "$work/progress" ]] && (( $(read_count) >= $1 )) && return 0
    kill -0 "$victim" 2>/dev/null || fail "the program ended before it reached $1"
    sleep 0.05
  done
  fail "the program did not reach $1 (at $(read_count))"
}
# start PROGRAM...: under the runtime in the background, its pid (the program's: scone run
# executes it) in victim.
start() {
  ( exec "$scone" run --volume "$work/vol:$work/key" -- "$@" ) &
  victim=$!
}
kill_victim() {
  kill -9 "$victim"
  wait "$victim" 2>/dev/null || true
  victim=""
}

case "$case_name" in
order-across-files)
  # A program writes a line to a, then one to b, in a loop, and is killed at a random point.
  # Natively both are in the page cache: b has as many lines as a, or one fewer. Before, each
  # file's buffer went to disk when it filled (every few thousand lines, at different times):
  # b could hold lines whose line in a was lost.
  for round in 1 2 3; do
    rm -f progress
    cat > order.py <<PYEOF
import os, sys
sys.path.insert(0, "$work")
from progress import Progress
p = Progress("$work/progress")
a = os.open("vol/a", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
b = os.open("vol/b", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
i = 0
while True:
    os.write(a, b"$MARKER a %07d\n" % i)
    os.write(b, b"$MARKER b %07d\n" % i)
    i += 1
    p.set(i)
PYEOF
    start "$PY" order.py
    wait_for_count $((5000 * round))
    kill_victim
    run cat vol/a > a.txt || fail "a cannot be read after the kill"
    run cat vol/b > b.txt || fail "b cannot be read after the kill"
    "$PY" - "$MARKER" $((5000 * round)) <<'PYEOF' || fail "round $round: the files are not a prefix of what was written, in order"
import sys
m = sys.argv[1].encode()
a = open("a.txt", "rb").read().split(b"\n")
b = open("b.txt", "rb").read().split(b"\n")
# A line cut short may end either file (the write it was killed in); whole lines before it.
a, b = [l for l in a[:-1]], [l for l in b[:-1]]
assert all(l == m + b" a %07d" % i for i, l in enumerate(a)), "a is not its lines in order"
assert all(l == m + b" b %07d" % i for i, l in enumerate(b)), "b is not its lines in order"
assert len(b) <= len(a) <= len(b) + 1, "a has %d lines, b %d" % (len(a), len(b))
assert len(a) >= int(sys.argv[2]), "only %d lines of a" % len(a)
PYEOF
  done
  check_volume
  ;;
outside-changes)
  # A program writes line i to a file of the volume, then changes something outside it: a
  # file's size, its times, a new file. Killed at a random point, the volume holds every line
  # before each change the outside shows, as natively (helper's finding: ftruncate, utime and
  # open(O_CREAT) went out before the line they followed).
  mkdir out
  cat > outside.py <<PYEOF
import os
a = os.open("vol/a", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
size = os.open("out/size", os.O_RDWR | os.O_CREAT, 0o644)
os.close(os.open("out/times", os.O_WRONLY | os.O_CREAT, 0o644))
i = 0
while True:
    i += 1
    os.write(a, b"$MARKER %07d\n" % i)
    if i % 3 == 0:
        os.ftruncate(size, i)
    elif i % 3 == 1:
        os.utime("out/times", (i, i))
    else:
        os.close(os.open("out/c%d" % i, os.O_WRONLY | os.O_CREAT, 0o644))
PYEOF
  start "$PY" outside.py
  for _ in $(seq 1 1200); do
    [[ -e out/size ]] && (( $(stat -c %s out/size) >= 6000 )) && break
    kill -0 "$victim" 2>/dev/null || fail "the program ended"
    sleep 0.05
  done
  kill_victim
  lines="$(run wc -l < vol/a)"
  size="$(stat -c %s out/size)"
  mtime="$(stat -c %Y out/times)"
  created="$(ls out | sed -n 's/^c//p' | sort -n | tail -n 1)"
  (( size >= 6000 )) || fail "the program did not get far: $size"
  echo "lines $lines size $size mtime $mtime created $created"
  for shown in "$size" "$mtime" "$created"; do
    (( lines >= shown )) || fail "the outside shows step $shown, the volume holds $lines lines (size $size, times $mtime, created $created)"
  done
  check_volume
  ;;
sqlite-acknowledged)
  # SQLite with synchronous=OFF, which SQLite documents as safe against an application crash
  # (not a power loss), in DELETE and WAL mode: each transaction inserts a batch of rows and
  # moves a total; the program prints each commit. Killed at a random point: every transaction
  # it acknowledged is there, none half. Before: torn transactions that integrity_check and
  # verify accepted (the database's pages published before its rollback journal), and
  # acknowledged ones lost.
  for mode in delete wal; do
    cat > txn.py <<PYEOF
import sqlite3, sys
db = sqlite3.connect("vol/$mode.db", isolation_level=None)
db.execute("pragma journal_mode=$mode")
db.execute("pragma synchronous=off")
db.execute("create table rows(txn integer, pad text)")
db.execute("create table total(n integer)")
db.execute("insert into total values(0)")
txn = 0
while True:
    txn += 1
    db.execute("begin")
    db.executemany("insert into rows values(?, ?)", [(txn, "$MARKER" + "x" * 300)] * 20)
    db.execute("update total set n = n + 20")
    db.execute("commit")
    print(txn, flush=True)
PYEOF
    start "$PY" txn.py > acked
    wait_for_line acked "^300$" "$victim"
    kill_victim
    acked="$(tail -n 1 acked)"
    run "$PY" - "$acked" "vol/$mode.db" > result 2>&1 <<'PYEOF' || fail "$mode: $(cat result)"
import sqlite3, sys
acked = int(sys.argv[1])
db = sqlite3.connect(sys.argv[2])
assert db.execute("pragma integrity_check").fetchone()[0] == "ok", "integrity_check fails"
counts = dict(db.execute("select txn, count(*) from rows group by txn"))
torn = [t for t, n in counts.items() if n != 20]
assert not torn, "torn transactions: %s" % torn[:5]
assert max(counts) >= acked, "acknowledged %d, the database has %d" % (acked, max(counts))
assert sorted(counts) == list(range(1, max(counts) + 1)), "transactions missing"
total = db.execute("select n from total").fetchone()[0]
assert total == 20 * len(counts), "total %d for %d transactions" % (total, len(counts))
print(acked, max(counts))
PYEOF
  done
  check_volume
  ;;
redis-acknowledged)
  # redis-server with its append-only file and appendfsync no (redis writes the file before it
  # replies; nothing is lost when the server is killed, natively): a client sets keys one by one
  # and counts the replies; the server is killed at a random point and started again. Every key
  # it acknowledged is there. Before: acknowledged writes lost in every run. Not everysec: while
  # its background fsync runs, redis postpones the write for up to 2 s and replies all the same
  # (aof.c, natively too), which a slow fsync on a loaded machine turned into lost keys (CI).
  sock="$work/redis.sock"
  start_redis() {
    : > redis.log
    start redis-server --port 0 --unixsocket "$sock" --dir "$work/vol" --save "" --appendonly yes \
      --appendfsync no --daemonize no --logfile "$work/redis.log"
    wait_for_line redis.log "ready to accept connections" "$victim"
  }
  start_redis
  "$PY" - "$sock" "$MARKER" "$work/progress" > acked 2>&1 <<'PYEOF' &
import socket, sys
sys.path.insert(0, ".")
from progress import Progress
p = Progress(sys.argv[3])
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rb")
i = 0
try:
    while True:
        key, value = b"key:%d" % i, sys.argv[2].encode() + b"-%d" % i
        s.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value))
        if f.readline() != b"+OK\r\n":
            break
        i += 1
        p.set(i)
except OSError:
    pass
print(i)
PYEOF
  client=$!
  wait_for_count 5000
  kill_victim
  wait "$client" || true
  acked="$(cat acked)"
  [[ "$acked" =~ ^[0-9]+$ ]] || fail "the client: $acked"
  start_redis
  keys="$(redis-cli -s "$sock" DBSIZE)"
  missing="$(for i in 0 $((acked / 2)) $((acked - 1)); do redis-cli -s "$sock" EXISTS "key:$i"; done | grep -c '^0' || true)"
  redis-cli -s "$sock" SHUTDOWN NOSAVE > /dev/null 2>&1 || true
  wait "$victim" 2>/dev/null || true
  victim=""
  (( keys >= acked )) || fail "acknowledged $acked keys, $keys after the restart"
  [[ "$missing" == 0 ]] || fail "$missing of the first, middle and last acknowledged keys missing"
  check_volume
  ;;
slow-logger)
  # A program logs a line now and then, makes no other call, and is killed long after its last
  # line (2 s, 100 times the runtime's bound: a loaded machine may delay the watcher thread):
  # every line is there. Before: none (a process alone published at close, sync or a full
  # buffer only).
  cat > logger.py <<PYEOF
import os, sys, time
sys.path.insert(0, "$work")
from progress import Progress
p = Progress("$work/progress")
log = os.open("vol/log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
for i in range(30):
    os.write(log, b"$MARKER %03d\n" % i)
    time.sleep(0.03)
time.sleep(2)
p.set(1)
time.sleep(3600)
PYEOF
  start "$PY" logger.py
  wait_for_count 1
  kill_victim
  run cat vol/log > log.txt || fail "the log cannot be read after the kill"
  [[ "$(wc -l < log.txt)" == 30 ]] || fail "$(wc -l < log.txt) of 30 lines kept"
  check_volume
  ;;
first-change-in-place)
  # A process that only reads writes nothing to the volume's metadata: it marks the volume in
  # use before its first journal record (docs/file-system-shield.md, "In use, or clean"). Here
  # the first change of each process is in place (an append to a file made earlier, a
  # truncation that grows one and writes past its old end, a rewrite of its middle), and the
  # process is killed while it writes: the volume verifies and the file keeps what it held.
  head -c 300000 /dev/urandom | base64 -w 99 | sed "s/^/$MARKER /" > seed.txt
  run cp seed.txt vol/log
  run cp seed.txt vol/grow
  run cp seed.txt vol/middle
  for round in 1 2 3; do
    cat > first.py <<PYEOF
import os, sys
sys.path.insert(0, "$work")
from progress import Progress
p = Progress("$work/progress")
how = sys.argv[1]
if how == "append":
    fd = os.open("vol/log", os.O_WRONLY | os.O_APPEND)
elif how == "grow":
    fd = os.open("vol/grow", os.O_RDWR)
    end = os.fstat(fd).st_size
    os.ftruncate(fd, end + 5000000)
else:
    fd = os.open("vol/middle", os.O_RDWR)
i = 0
while True:
    line = b"$MARKER $round %07d\n" % i
    if how == "middle":
        os.pwrite(fd, line, (i * 4099) % 200000)
    elif how == "grow":
        os.pwrite(fd, line, end + 1000 + (i * 4099) % 4000000)
    else:
        os.write(fd, line)
    i += 1
    p.set(i)
PYEOF
    for how in append grow middle; do
      rm -f progress
      start "$PY" first.py "$how"
      wait_for_count $((3000 * round))
      kill_victim
      "$scone" volume verify vol --key-file key > verify.txt 2>&1 ||
        fail "round $round, $how: the volume does not verify after the kill: $(cat verify.txt)"
    done
    run cat vol/log > log.txt || fail "round $round: the log cannot be read after the kill"
    head -c "$(stat -c %s seed.txt)" log.txt | cmp -s - seed.txt || fail "round $round: the log lost what it held before"
    run cat vol/grow > grow.txt || fail "round $round: the grown file cannot be read after the kill"
    head -c "$(stat -c %s seed.txt)" grow.txt | cmp -s - seed.txt || fail "round $round: the grown file lost what it held before"
    run cat vol/middle > /dev/null || fail "round $round: the rewritten file cannot be read after the kill"
  done
  check_volume
  ;;
faults)
  # A program writes lines, then crashes: natively every line that write() returned is in the
  # page cache and stays. A process alone buffers its writes; before, a fault (which the runtime
  # left to the kernel) lost all of them. Now its fault handler publishes them first, and the
  # process still ends by the fault (the shell sees 128 + the signal's number) while the program
  # sees SIG_DFL for it.
  cat > crash.py <<PYEOF
import ctypes, os, signal
assert signal.getsignal(signal.SIGSEGV) == signal.SIG_DFL, signal.getsignal(signal.SIGSEGV)
fd = os.open("vol/py", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for i in range(200):
    os.write(fd, b"$MARKER %03d\n" % i)
ctypes.string_at(0)
PYEOF
  status=0
  run "$PY" crash.py 2> err.txt || status=$?
  [[ "$status" == $((128 + 11)) ]] || fail "python3 ended with $status, not by SIGSEGV: $(cat err.txt)"
  [[ "$(run wc -l < vol/py)" == 200 ]] || fail "$(run wc -l < vol/py) of 200 lines kept after a SIGSEGV"
  # Each fault the kernel raises for an instruction, in a C program; then faults of programs
  # with threads, and of crash handlers. Each program writes 200 lines first.
  cat > fault.c <<'CEOF'
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
static int fd;
static const char* marker;
static volatile long* written;  /* writes that returned, counted in a mapping outside the volume */
static void crash(void) { *(volatile int*)16 = 1; }
static void* crash_soon(void* arg) { usleep(1000); crash(); return arg; }
static void* write_on(void* arg) {
  for (long i = 0;; ++i) {
    dprintf(fd, "%s more %ld\n", marker, i);
    written[0] = i + 1;
  }
  return arg;
}
static void report_and_crash_again(int sig) {  /* a crash reporter */
  dprintf(fd, "%s crash report for signal %d\n", marker, sig);
  signal(sig, SIG_DFL);
  crash();
}
int main(int argc, char** argv) {
  fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
  marker = argv[3];
  for (int i = 0; i < 200; ++i) dprintf(fd, "%s %03d\n", marker, i);
  const char* how = argv[2];
  if (!strcmp(how, "segv")) crash();
  if (!strcmp(how, "ill")) __builtin_trap();
  if (!strcmp(how, "trap")) __asm__ volatile("int3");
  if (!strcmp(how, "fpe")) { volatile int zero = 0; printf("%d\n", 100 / zero); }
  if (!strcmp(how, "bus")) {  /* a mapping past the end of its file */
    int m = open("outside", O_RDWR | O_CREAT | O_TRUNC, 0644);
    volatile char* p = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
    p[0] = 1;
  }
  if (!strcmp(how, "threads")) {  /* four threads fault at once */
    pthread_t t[4];
    for (int i = 0; i < 4; ++i) pthread_create(&t[i], NULL, crash_soon, NULL);
    pause();
  }
  if (!strcmp(how, "beside-a-writer")) {  /* another thread writes on */
    int m = open("written", O_RDWR | O_CREAT | O_TRUNC, 0644);
    ftruncate(m, 4096);
    written = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
    pthread_t t;
    pthread_create(&t, NULL, write_on, NULL);
    usleep(10000);
    crash();
  }
  if (!strcmp(how, "blocked")) {  /* a worker that blocks every signal */
    sigset_t all, now;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_sigmask(SIG_BLOCK, NULL, &now);
    if (!sigismember(&now, SIGSEGV)) return 3;  /* the program sees what it asked for */
    crash();
  }
  if (!strcmp(how, "reporter")) {
    signal(SIGSEGV, report_and_crash_again);
    crash();
  }
  return 0;
}
CEOF
  gcc -O1 -o fault fault.c -lpthread
  for how in segv:11 ill:4 trap:5 fpe:8 bus:7 threads:11 beside-a-writer:11 blocked:11 reporter:11; do
    name="${how%%:*}"
    rounds=3
    [[ "$name" == beside-a-writer ]] && rounds=8  # a race: it lost writes about 1 run in 4
    for round in $(seq 1 "$rounds"); do
      status=0
      rm -f written
      run ./fault "vol/$name" "$name" "$MARKER" 2> err.txt || status=$?
      [[ "$status" == $((128 + ${how##*:})) ]] || fail "$name: ended with $status: $(cat err.txt)"
      lines="$(run wc -l < "vol/$name")"
      case "$name" in
      beside-a-writer)
        returned=$("$PY" -c 'import struct; print(struct.unpack("<q", open("written", "rb").read(8))[0])')
        (( lines >= 200 + returned )) || fail "$name: $lines lines kept, $((200 + returned)) writes had returned"
        ;;
      reporter)
        [[ "$lines" == 201 ]] || fail "$name: $lines of 201 lines kept (the crash report last)"
        ;;
      *)
        [[ "$lines" == 200 ]] || fail "$name: $lines of 200 lines kept"
        ;;
      esac
    done
  done
  check_volume
  ;;
*)
  fail "unknown case $case_name"
  ;;
esac
echo "ok $case_name"
