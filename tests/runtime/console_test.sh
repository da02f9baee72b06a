#!/usr/bin/env bash
# The console shield: unmodified programs under `scone run --console-key-file K` write their
# stdout and stderr only as sealed records; `scone console decrypt` gives back exactly what they
# wrote natively, and names the record on any damage (docs/console-shield.md).
# usage: console_test.sh SCONE CASE
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib.sh"
scone="$1"
case_name="$2"
work="$(mktemp -d)"
trap 'if [[ -n "${victim:-}" ]]; then kill -9 "$victim" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
cd "$work"
PY=/usr/bin/python3
MARKER="SCONE-CONSOLE-MARKER-$$"
RECORDS="$PY $here/tools/console_records.py"

"$scone" console keygen key 2>/dev/null
"$scone" console keygen other-key 2>/dev/null
shielded() { "$scone" run --console-key-file key -- "$@"; }
decrypt() { "$scone" console decrypt --key-file key "$@"; }

# no_marker FILE...: the plaintext marker is nowhere in the captured console.
no_marker() {
  for f in "$@"; do
    [[ -s "$f" ]] || fail "$f is empty: nothing was written"
    ! grep -a -q "$MARKER" "$f" || fail "plaintext marker in the captured console $f"
    ! grep -a -q "SCONE-CONSOLE" "$f" || fail "plaintext in the captured console $f"
  done
}

# damaged EXPECTED-PATTERN FILE [KEY]: decrypt fails with exit 3 and a message matching the pattern.
damaged() {
  local pattern="$1" file="$2" key="${3:-key}" rc=0
  "$scone" console decrypt --key-file "$key" "$file" > damaged.out 2> damaged.err || rc=$?
  [[ $rc -eq 3 ]] || { cat damaged.err >&2; fail "decrypt of $file exited $rc, not 3 (damage: $pattern)"; }
  grep -q -E -- "$pattern" damaged.err || { cat damaged.err >&2; fail "decrypt of $file does not say: $pattern"; }
}

# A shell script with children of every kind: builtins, coreutils, a pipeline, command
# substitution, a subshell, exec, python3 on both streams, a child that redirects its stdout.
cat > script.sh <<SCRIPT
echo "$MARKER one from bash"
printf '%s %d\n' "$MARKER printf" 42
seq 1 5 | sed "s/^/$MARKER seq /"
echo "$MARKER to stderr" >&2
x=\$(echo "$MARKER substituted")
echo "\$x"
( echo "$MARKER from a subshell"; ls -d / )
$PY -c 'import sys; print("$MARKER python out"); print("$MARKER python err", file=sys.stderr); sys.stdout.write("$MARKER no newline")'
echo
echo "$MARKER via /dev/stdout" >> /dev/stdout
echo "$MARKER via /proc/self/fd/2" >> /proc/self/fd/2
head -c 100000 /dev/zero | tr '\0' 'z' | fold -w 1000
echo
sh -c 'exec echo "$MARKER after exec"'
echo "$MARKER last"
SCRIPT

case "$case_name" in
programs)
  # Both streams into one file, then each into its own: decrypt gives exactly the native output.
  # The native reference through pipes: there a descriptor opened by name (/dev/stdout) writes at
  # the end as the others do (on a file, natively, it has its own offset and the shell's writes go
  # over its lines; shielded, it writes through the console's stream and nothing is lost).
  bash script.sh 2>&1 | cat > native.out
  shielded bash script.sh > sealed.out 2>&1
  no_marker sealed.out
  decrypt sealed.out > decrypted.out 2> decrypt.err || { cat decrypt.err >&2; fail "decrypt failed"; }
  cmp native.out decrypted.out || { diff native.out decrypted.out | head >&2; fail "decrypted output differs from the native run"; }
  grep -q "intact" decrypt.err || fail "decrypt does not say the console is intact"
  ( bash script.sh | cat > native.stdout ) 2>&1 | cat > native.stderr
  shielded bash script.sh > sealed.stdout 2> sealed.stderr
  no_marker sealed.stdout sealed.stderr
  decrypt sealed.stdout > dec.stdout 2>/dev/null || fail "decrypt of stdout failed"
  decrypt < sealed.stderr > dec.stderr 2>/dev/null || fail "decrypt of stderr (from stdin) failed"
  cmp native.stdout dec.stdout || fail "stdout differs from the native run"
  cmp native.stderr dec.stderr || fail "stderr differs from the native run"
  # Through a pipe (records of at most PIPE_BUF), as `docker logs` would capture it.
  shielded bash script.sh 2>&1 | cat > piped.out
  no_marker piped.out
  decrypt piped.out 2>/dev/null | cmp - native.out || fail "piped output differs from the native run"
  # The runtime's own lines are records too (they name the program's files).
  shielded bash -c '/sbin/ldconfig -p; true' > refused.out 2>&1
  ! grep -a -q "exec refused" refused.out || fail "the runtime's line in plaintext on the console"
  decrypt refused.out 2>/dev/null | grep -q "scone: exec refused: /sbin/ldconfig" || fail "the runtime's line is not in the console"
  # Without the option the console is the program's, unchanged.
  # The runtime's own lines are records too (they name the program's files).
  shielded bash -c '/sbin/ldconfig -p; true' > refused.out 2>&1
  ! grep -a -q "exec refused" refused.out || fail "the runtime's line in plaintext on the console"
  decrypt refused.out 2>/dev/null | grep -q "scone: exec refused: /sbin/ldconfig" || fail "the runtime's line is not in the console"
  # Without the option the console is the program's, unchanged (bash's children too: bash's own
  # unsetenv left the runtime's descriptor number in their environment).
  "$scone" run -- bash script.sh 2>&1 | cat > plain.out
  cmp native.out plain.out || fail "without --console-key-file the output changed"
  ;;

write-calls)
  # Every way onto descriptor 1: write, writev, pwrite, sendfile, splice, copy_file_range,
  # a dup, a descriptor opened by name, stdio; on a file and on a pipe.
  echo "$MARKER from a file" > source.txt
  cat > calls.py <<PYEOF
import os, sys
os.write(1, b"$MARKER write\n")
os.writev(1, [b"$MARKER ", b"writev\n"])
try:
    os.pwrite(1, b"$MARKER pwrite\n", 0)
except OSError:
    os.write(1, b"$MARKER pwrite\n")  # a pipe: ESPIPE natively
src = os.open("source.txt", os.O_RDONLY)
os.sendfile(1, src, 0, 100)
try:
    os.copy_file_range(src, 1, 100, 0)
except OSError:
    os.write(1, b"$MARKER from a file\n")  # onto a pipe: EINVAL natively
r, w = os.pipe()
os.write(w, b"$MARKER spliced\n")
os.splice(r, 1, 100)
d = os.dup(1)
os.write(d, b"$MARKER dup\n")
f = open("/dev/stdout", "a")
f.write("$MARKER opened by name\n")
f.close()
print("$MARKER stdio")
PYEOF
  # The native reference through a pipe: on a file, natively, pwrite at 0 and the descriptor
  # opened by name write over other lines; shielded, every write is a record of the stream.
  $PY calls.py | cat > native.out
  shielded $PY calls.py > sealed.out 2>/dev/null
  no_marker sealed.out
  decrypt sealed.out 2>/dev/null > decrypted.out || fail "decrypt failed"
  cmp native.out decrypted.out || { diff native.out decrypted.out >&2; fail "file console differs from the native run"; }
  shielded $PY calls.py 2>/dev/null | cat > sealed-pipe.out
  no_marker sealed-pipe.out
  decrypt sealed-pipe.out 2>/dev/null | cmp - native.out || fail "pipe console differs from the native run"
  # A FIFO as the console: a descriptor opened on it by name writes through the stream; once the
  # stream ended, such a descriptor fails (EIO), never plaintext.
  mkfifo fifo
  cat fifo > fifo.out &
  reader=$!
  shielded bash -c "echo '$MARKER a'; echo '$MARKER by name' >> fifo; exec >&-; echo '$MARKER after the end' > fifo" \
    > fifo 2>/dev/null || true
  wait "$reader"
  no_marker fifo.out
  [[ "$(decrypt fifo.out 2>/dev/null)" == "$MARKER a"$'\n'"$MARKER by name" ]] || fail "a FIFO console opened by name"
  ;;

concurrent)
  # Eight processes (shell loops, python with writes far larger than PIPE_BUF) writing into one
  # pipe at once: every record lands whole (else decrypt fails), every stream is complete.
  # Writes larger than PIPE_BUF interleave natively too: each process's output is compared whole.
  cat > big.py <<'PYEOF'
import os, sys
p = sys.argv[1]
for i in range(40):
    os.write(1, b"".join(b"%s big %s write %d part %d\n" % (sys.argv[2].encode(), p.encode(), i, j) for j in range(800)))
PYEOF
  cat > many.sh <<SCRIPT
for p in 1 2 3 4; do
  ( for i in \$(seq 1 500); do echo "$MARKER proc \$p line \$i"; done ) &
done
for p in 5 6 7 8; do $PY big.py \$p "$MARKER" & done
wait
SCRIPT
  { for p in 1 2 3 4; do for i in $(seq 1 500); do echo "$MARKER proc $p line $i"; done; done
    for p in 5 6 7 8; do $PY big.py $p "$MARKER"; done; } | sort > expected.sorted
  shielded bash many.sh 2>/dev/null | cat > sealed.out
  no_marker sealed.out
  mkdir split
  decrypt --split split sealed.out 2>decrypt.err || { cat decrypt.err >&2; fail "decrypt failed"; }
  cat split/* | sort | cmp - expected.sorted || fail "concurrent writers: a process's output differs from what it wrote"
  [[ "$(grep -l "proc 3 line" split/* | wc -l)" -eq 1 ]] || fail "one process's lines are not in one stream"
  # A --split whose files cannot be made (no such directory, or made already by a run before):
  # an error naming the file, no crash (it ended in SIGSEGV, closing a file never opened).
  for dir in no-such-dir split; do
    rc=0
    decrypt --split "$dir" sealed.out > /dev/null 2> split.err || rc=$?
    (( rc != 0 && rc < 128 )) && grep -q "scone: .*--split: create $dir/" split.err ||
      { cat split.err; fail "--split into $dir ended with $rc"; }
  done
  shielded bash many.sh > sealed-file.out 2>/dev/null
  decrypt sealed-file.out 2>/dev/null | sort | cmp - expected.sorted || fail "concurrent writers into one file"
  # Threads of one process: their writes are records of one stream, in the order they land.
  cat > threads.py <<'PYEOF'
import os, sys, threading
def run(t):
    for i in range(2000):
        os.write(1 + (i % 2), b"%s thread %d line %d\n" % (sys.argv[1].encode(), t, i))
threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
PYEOF
  $PY threads.py "$MARKER" 2>&1 | sort > threads.expected
  shielded $PY threads.py "$MARKER" 2>&1 | cat > threads.out
  no_marker threads.out
  decrypt threads.out 2>/dev/null | sort | cmp - threads.expected || fail "threads writing stdout and stderr at once"
  ;;

nonblocking)
  # A program that sets O_NONBLOCK on its stdout pipe, writes until EAGAIN, and goes on after
  # partial writes: what it was told was written is exactly what decrypt gives back.
  mkfifo go
  cat > nb.py <<'PYEOF'
import fcntl, os, select, sys
fcntl.fcntl(1, fcntl.F_SETFL, fcntl.fcntl(1, fcntl.F_GETFL) | os.O_NONBLOCK)
data = b"".join(b"%s line %06d\n" % (sys.argv[1].encode(), i) for i in range(40000))
sent, refused, told = 0, 0, False
while sent < len(data):
    try:
        n = os.write(1, data[sent:sent + 100000])
        sent += n
    except BlockingIOError:
        refused += 1
        if not told:
            with open("go", "w") as g:  # the reader starts only once the pipe was full
                g.write("go\n")
            told = True
        select.select([], [1], [])
with open("refusals", "w") as r:
    r.write(str(refused))
PYEOF
  shielded $PY nb.py "$MARKER" 2>/dev/null | { read -r _ < go; cat > sealed.out; }
  [[ "$(cat refusals)" -gt 0 ]] || fail "the writer never saw EAGAIN: the test did not test it"
  no_marker sealed.out
  decrypt sealed.out 2>/dev/null > decrypted.out || fail "decrypt failed"
  $PY -c 'import sys; sys.stdout.buffer.write(b"".join(b"%s line %06d\n" % (sys.argv[1].encode(), i) for i in range(40000)))' "$MARKER" > expected.out
  cmp expected.out decrypted.out || fail "non-blocking writes: decrypted output differs from what the program wrote"
  # O_NONBLOCK set by another process on the shared description, after this one's stream had
  # written (the shield keeps what it learnt, and learns the change at the first EAGAIN): the
  # child gets EAGAIN as natively, and what it was told was written is what decrypt gives back.
  rm -f go refusals
  mkfifo go
  cat > nb_other.py <<'PYEOF'
import fcntl, os, select, sys
os.write(1, b"before the fork\n")
r, w = os.pipe()
child = os.fork()
if child:
    fcntl.fcntl(1, fcntl.F_SETFL, fcntl.fcntl(1, fcntl.F_GETFL) | os.O_NONBLOCK)
    os.write(w, b"x")
    os._exit(0 if os.waitpid(child, 0)[1] == 0 else 1)
os.read(r, 1)
line = b"%s small %06d\n" % (sys.argv[1].encode(), 0)
sent, refused = [], 0
while not refused:  # small writes until the full pipe refuses one
    try:
        os.write(1, line)
        sent.append(line)
    except BlockingIOError:
        refused = 1
with open("go", "w") as g:
    g.write("go\n")
data = b"".join(b"%s large %06d\n" % (sys.argv[1].encode(), i) for i in range(20000))
done = 0
while done < len(data):
    try:
        done += os.write(1, data[done:done + 100000])
    except BlockingIOError:
        refused += 1
        select.select([], [1], [])
with open("refusals", "w") as f:
    f.write(str(refused))
with open("expected.out", "wb") as f:
    f.write(b"before the fork\n" + b"".join(sent) + data)
PYEOF
  shielded $PY nb_other.py "$MARKER" 2>/dev/null | { read -r _ < go; cat > sealed2.out; }
  [[ "$(cat refusals)" -gt 0 ]] || fail "the child never saw EAGAIN on the description its parent made non-blocking"
  no_marker sealed2.out
  decrypt sealed2.out 2>/dev/null > decrypted2.out || fail "decrypt failed (O_NONBLOCK set by another process)"
  cmp expected.out decrypted2.out || fail "O_NONBLOCK set by another process: decrypted output differs from what the program wrote"
  ;;

tamper)
  cat > lines.sh <<SCRIPT
for i in 1 2 3 4 5 6 7 8; do echo "$MARKER line \$i"; done
sh -c 'echo "$MARKER child"'
echo "$MARKER after the child"
SCRIPT
  shielded bash lines.sh > sealed.out 2>/dev/null
  decrypt sealed.out > good.out 2>/dev/null || fail "the untouched console does not decrypt"
  $RECORDS sealed.out list > records
  # The first stream's records: #0 its start, #1 "line 1", #2 "line 2"...
  root="$(awk 'NR==1 {print $5}' records)"
  line3="$(awk -v s="$root" '$5 == s && $6 == 3 {print $1}' records)"   # "line 3"
  line5="$(awk -v s="$root" '$5 == s && $6 == 5 {print $1}' records)"
  [[ -n "$line3" && -n "$line5" ]] || fail "records not as expected"
  $RECORDS sealed.out flip "$line3" flipped.out
  damaged "record $line3 .*authentication failed" flipped.out
  grep -q "line 2" damaged.out || fail "what authenticated before the flipped record is not printed"
  ! grep -q "line 3" damaged.out || fail "the flipped record was printed"
  ! grep -q "line 4" damaged.out || fail "a record after the damage was printed"
  $RECORDS sealed.out delete "$line3" deleted.out
  damaged "record $line3 .*missing here" deleted.out
  $RECORDS sealed.out swap "$line3" "$line5" swapped.out
  damaged "record $line3 .*missing here" swapped.out
  $RECORDS sealed.out dup "$line3" duplicated.out
  damaged "record $((line3 + 1)) .*again" duplicated.out
  $RECORDS sealed.out cut 7 cut.out
  damaged "cut short.*truncated" cut.out
  last="$(wc -l < records)"
  $RECORDS sealed.out delete "$last" no-end.out
  damaged "no final record" no-end.out
  $RECORDS sealed.out delete 1 no-start.out
  damaged "record 1 .*missing" no-start.out
  # The child's stream removed whole: its parent announced it.
  # Streams in order of first appearance: the first process's stdout and stderr (its stderr starts
  # when it announces the child), then the child's.
  child="$(awk '!seen[$5]++ {n++; if (n == 2) print $5}' records)"
  [[ -n "$child" ]] || fail "no child stream"
  $RECORDS sealed.out drop-stream "$child" no-child.out
  damaged "announced a child process's stream .*missing: removed" no-child.out
  damaged "record 1 .*authentication failed.*key" sealed.out other-key
  : > empty.out
  damaged "no console records" empty.out
  # Plaintext lines are no records: skipped and counted, never printed; with no record at all
  # that is damage. Plaintext that could be a record line (base64 alone) is refused as one.
  printf '%s plain line\n' "$MARKER" > plain.out
  damaged "no console records at all \(only 1 line" plain.out
  grep -q "1 line(s) that are no console records skipped" damaged.err || fail "the skipped line is not counted"
  ! grep -q "$MARKER" damaged.out || fail "a skipped line was printed"
  printf 'SCONECONSOLEMARKER\n' > plain64.out
  damaged "record 1 .*not a console record" plain64.out
  # Records of another run under the same key, appended: a second first process is allowed
  # (`>>` of two runs), but a copy of this run's records is not.
  cat sealed.out sealed.out > twice.out
  damaged "goes on after its final record" twice.out
  ;;

with-volume)
  # stdout into a protected file is the file shield's (no records inside the volume's file),
  # stderr the console's. (A child of bash here loses the file's content: a limit of the file
  # shield's descriptors handed over by the caller's shell, docs/runtime.md; not the console's.)
  "$scone" volume create vol --key-file vkey >/dev/null 2>&1
  shielded_v() { "$scone" run --volume "vol:vkey" --console-key-file key -- "$@"; }
  shielded_v bash -c "echo '$MARKER into the volume'; echo '$MARKER onto the console' >&2" >> vol/out.txt 2> err.out
  [[ "$("$scone" volume cat vol out.txt --key-file vkey)" == "$MARKER into the volume" ]] || fail "the volume's file"
  ! grep -a -q "$MARKER" vol/out.txt || fail "plaintext in the volume"
  no_marker err.out
  [[ "$(decrypt err.out 2>/dev/null)" == "$MARKER onto the console" ]] || fail "the console beside a volume"
  # Children writing into the volume and onto the console.
  shielded_v bash -c "sh -c 'echo \"$MARKER child\" > vol/child.txt; echo \"$MARKER child\"'; echo '$MARKER parent'" > out2.out 2>/dev/null
  no_marker out2.out
  [[ "$(decrypt out2.out 2>/dev/null)" == "$MARKER child"$'\n'"$MARKER parent" ]] || fail "children beside a volume"
  [[ "$("$scone" volume cat vol child.txt --key-file vkey)" == "$MARKER child" ]] || fail "the child's file in the volume"
  ;;

allocator-trim)
  # Threads whose freed memory the C library gives back: it trims a thread's heap with its
  # allocator locked, and opens, reads and closes /proc/sys/vm/overcommit_memory there. Those
  # calls enter the runtime like any other; had the runtime allocated from the program's
  # allocator while serving them, the thread would wait for itself forever (a hang in every run).
  "$scone" volume create vol --key-file vkey >/dev/null 2>&1
  cat > trim.py <<'PYEOF'
import os, sys, threading
marker, volume = sys.argv[1], sys.argv[2]
def work(n):
    for round in range(3):
        blocks = [bytes(100000) for _ in range(200)]
        del blocks
        with open(f"{volume}/t{n}-{round}", "w") as f:
            f.write(f"{marker} {n} {round}\n")
    os.write(1, f"{marker} thread {n} trimmed\n".encode())  # one write: lines never interleave
threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
for t in threads: t.start()
for t in threads: t.join()
PYEOF
  rc=0
  timeout -k 5 60 "$scone" run --volume "vol:vkey" --console-key-file key -- $PY trim.py "$MARKER" vol > trim.out 2>&1 || rc=$?
  [[ $rc -eq 0 ]] || fail "threads trimming their heaps: exit status $rc (124 or 137: it hung)"
  no_marker trim.out
  [[ "$(decrypt trim.out 2>/dev/null | sort)" == "$(for n in 0 1 2 3; do echo "$MARKER thread $n trimmed"; done)" ]] ||
    fail "a thread's line is missing"
  ! grep -r -a -q "$MARKER" vol || fail "plaintext in the volume"
  [[ "$("$scone" volume cat vol t3-2 --key-file vkey)" == "$MARKER 3 2" ]] || fail "a thread's file in the volume"
  ;;

killed)
  # SIGKILL leaves no final record: decrypt prints what authenticated and says it is truncated.
  mkfifo ready
  # Started directly (not through a shell function, which would run in a subshell of its own).
  waiter="import signal, sys; print(sys.argv[1], flush=True); open('ready', 'w').write('ready\\n'); signal.pause()"
  "$scone" run --console-key-file key -- $PY -c "$waiter" "$MARKER before the kill" > sealed.out 2>&1 &
  victim=$!
  read -r _ < ready
  kill -9 "$victim"
  wait "$victim" || true
  victim=
  no_marker sealed.out
  damaged "no final record.*truncated" sealed.out
  grep -q "$MARKER before the kill" damaged.out || fail "the output before the kill is not printed"
  # SIGTERM with its default action: the process ends by it, after its final records.
  "$scone" run --console-key-file key -- $PY -c "$waiter" "$MARKER before the term" > term.out 2>&1 &
  victim=$!
  read -r _ < ready
  kill -TERM "$victim"
  rc=0; wait "$victim" || rc=$?
  victim=
  [[ $rc -eq 143 ]] || fail "SIGTERM: exit status $rc, not 143"
  decrypt term.out > term.dec 2>/dev/null || fail "SIGTERM left the console without its final records"
  grep -q "$MARKER before the term" term.dec || fail "output before SIGTERM is missing"
  ;;

sibling-streams)
  # stdout and stderr opened apart onto one file (`>> f 2>> f`): two first streams, each naming
  # the other in its start record; every record of either removed is evident.
  shielded bash -c "echo '$MARKER out'; echo '$MARKER err' >&2; echo '$MARKER out again'" >> both.out 2>> both.out
  no_marker both.out
  decrypt both.out > both.dec 2>/dev/null || fail "the untouched console does not decrypt"
  [[ "$(sort both.dec)" == "$(printf '%s\n' "$MARKER err" "$MARKER out" "$MARKER out again")" ]] || fail "both streams' output"
  $RECORDS both.out list > records
  [[ "$(awk '{print $5}' records | sort -u | wc -l)" -eq 2 ]] || fail "not two first streams"
  for s in $(awk '{print $5}' records | sort -u); do
    $RECORDS both.out drop-stream "$s" dropped.out
    damaged "names another first stream of its run on this file .*missing: removed" dropped.out
  done
  # Apart (`> out 2> err`), each file decrypts alone: they name no sibling.
  shielded bash -c "echo '$MARKER out'; echo '$MARKER err' >&2" > apart.out 2> apart.err
  decrypt apart.out > /dev/null 2>&1 || fail "stdout alone does not decrypt"
  decrypt apart.err > /dev/null 2>&1 || fail "stderr alone does not decrypt"
  ;;

exec-after-many-lines)
  # A short program a chatty shell executes late writes its one line and lets go of the pipe's
  # lock at once, as the shell's first lines did: the threshold for keeping the lock counts the
  # records of this process image, not the stream's numbering that exec carries on. Kept, its
  # lock needed the runtime's thread (a second task in /proc/self/task).
  shielded /bin/bash -c 'for i in $(seq 40); do echo "$0 line $i"; done; exec '"$PY"' -c "
import os, sys
sys.stdout.write(sys.argv[1] + \" from the executed program\n\")
sys.stdout.flush()
open(\"tasks\", \"w\").write(str(len(os.listdir(\"/proc/self/task\"))))" "$0"' "$MARKER" 2>/dev/null | cat > exec.out
  [[ "$(cat tasks)" == 1 ]] || fail "the executed program runs $(cat tasks) tasks after its one line (expected 1: no runtime thread)"
  no_marker exec.out
  [[ "$(decrypt exec.out 2>/dev/null | tail -n 1)" == "$MARKER from the executed program" ]] || fail "the console's records"
  ;;
kept-lock)
  # A program writing record after record into a pipe keeps the pipe's lock between its records
  # (runtime/console/kept_locks.h). Another writer of the pipe still gets through while the
  # program computes without a system call after its lines (the runtime's thread lets go), and
  # the program's reads meanwhile give what they give natively.
  cat > keeper.py <<'PYEOF'
import mmap, os, socket, sys, threading, time
marker = sys.argv[1].encode()
log = os.open("keeper.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
flags = mmap.mmap(-1, 4096)  # shared with the child: waiting on it makes no system call
child = os.fork()
if child == 0:
    while flags[0] == 0:
        pass
    os.write(1, b"%s from the sibling\n" % marker)  # needs the pipe's lock
    flags[1] = 1
    os._exit(0)
for i in range(100):
    os.write(1, b"%s line %d\n" % (marker, i))
flags[0] = 1
deadline = time.monotonic() + 60  # (no system call either: the vDSO)
while flags[1] == 0 and time.monotonic() < deadline:
    pass
os.write(log, b"sibling: %s\n" % (b"through" if flags[1] else b"STUCK behind the lock"))
os.waitpid(child, 0)
# Reads while the lock is kept: a regular file only partly in the page cache gives the whole
# count in one read, as natively; a pipe gives what it holds.
data = b"".join(b"%09d\n" % i for i in range(800000))
with open("big.bin", "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
fd = os.open("big.bin", os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
os.pread(fd, 65536, 0)  # its first pages cached, the rest not
for i in range(20):
    os.write(1, b"%s again %d\n" % (marker, i))
got = os.read(fd, len(data))
os.write(log, b"file read: %d of %d, %s\n" % (len(got), len(data), b"same" if got == data else b"DIFFERENT"))
r, w = os.pipe()
os.write(w, b"12345")
os.write(log, b"pipe read: %s\n" % os.read(r, 100))
# A socket's low-water mark: natively the read waits for 10 bytes (a read tried without waiting
# first gave the 5 there).
a, b = socket.socketpair()
a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 10)
b.send(b"12345")
threading.Timer(0.2, lambda: b.send(b"67890")).start()
for i in range(20):
    os.write(1, b"%s before the socket %d\n" % (marker, i))
os.write(log, b"socket read: %s\n" % os.read(a.fileno(), 100))
PYEOF
  expected="$( { for i in $(seq 0 99); do echo "$MARKER line $i"; done; echo "$MARKER from the sibling"
                 for i in $(seq 0 19); do echo "$MARKER again $i"; echo "$MARKER before the socket $i"; done; } | sort)"
  shielded $PY keeper.py "$MARKER" 2>/dev/null | cat > keeper.out
  cat keeper.log
  grep -q "^sibling: through" keeper.log || fail "a sibling's write waited behind a lock the computing program kept"
  grep -q "^file read: 8000000 of 8000000, same" keeper.log || fail "a read of a regular file while the lock was kept"
  grep -q "^pipe read: 12345$" keeper.log || fail "a read of a pipe while the lock was kept"
  grep -q "^socket read: 1234567890$" keeper.log || fail "a read of a socket (SO_RCVLOWAT) while the lock was kept"
  no_marker keeper.out
  [[ "$(decrypt keeper.out 2>/dev/null | sort)" == "$expected" ]] || fail "the console's records"
  ;;

another-run)
  # Two runs under one key appended into one file: decrypt refuses the second run's stream at its
  # start record, before anything of it is printed.
  shielded bash -c "echo '$MARKER first run'" > run1.out 2>&1
  shielded bash -c "echo '$MARKER second run'; sh -c 'echo \"$MARKER second child\"'" > run2.out 2>&1
  cat run1.out run2.out > appended.out
  damaged "a stream of another run" appended.out
  grep -q "first run" damaged.out || fail "the first run's authentic output is not printed"
  ! grep -q "second" damaged.out || fail "another run's output was printed"
  # Another run's records spliced into the middle of this one's.
  $RECORDS run2.out list > records2
  n2="$(wc -l < records2)"
  { head -c "$(awk 'NR==2 {print $2}' <($RECORDS run1.out list))" run1.out; cat run2.out
    tail -c +"$(( $(awk 'NR==2 {print $2}' <($RECORDS run1.out list)) + 1 ))" run1.out; } > spliced.out
  [[ "$n2" -gt 2 ]] || fail "records not as expected"
  damaged "a stream of another run" spliced.out
  ! grep -q "second" damaged.out || fail "another run's output was printed (spliced)"
  # A log appended at every restart: with --runs, run after run, each boundary named.
  decrypt --runs appended.out > runs.dec 2> runs.err || { cat runs.err >&2; fail "--runs: two whole runs refused"; }
  [[ "$(cat runs.dec)" == "$MARKER first run"$'\n'"$MARKER second run"$'\n'"$MARKER second child" ]] ||
    fail "--runs: the runs' output"
  grep -q "run 2 of this console begins at record" runs.err || fail "--runs: the boundary is not named"
  grep -q "intact: .* 2 runs" runs.err || fail "--runs: the summary does not count the runs"
  rc=0; decrypt --runs spliced.out > runs-spliced.out 2> runs-spliced.err || rc=$?
  [[ $rc -eq 3 ]] && grep -q "before this run is complete" runs-spliced.err || fail "--runs: a run spliced into another"
  ! grep -q "second" runs-spliced.out || fail "--runs: a spliced run's output was printed"
  ;;

truncate)
  # Opens by name with O_TRUNC of the console's file (`> /dev/stdout`, the file's own path,
  # creat), truncate(2) and ftruncate(2) of it: the records sealed so far stay; natively each
  # would have cut the earlier output.
  cat > trunc.py <<PYEOF
import os, sys
print("$MARKER one", flush=True)
with open("/dev/stdout", "w") as f:
    f.write("$MARKER two\n")
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
os.write(fd, b"$MARKER three\n")
os.close(fd)
for call in (lambda: os.truncate(sys.argv[1], 0), lambda: os.ftruncate(1, 0)):
    try:
        call()
        print("$MARKER truncated", flush=True)
    except OSError as e:
        print("$MARKER refused", e.errno, flush=True)
os.system("echo '$MARKER four' > /dev/stdout")
print("$MARKER five", flush=True)
PYEOF
  shielded $PY trunc.py "$work/trunc.out" > trunc.out 2>&1
  no_marker trunc.out
  decrypt trunc.out > trunc.dec 2> trunc.err || { cat trunc.err >&2; fail "O_TRUNC destroyed the sealed records"; }
  expected="$(printf '%s\n' "$MARKER one" "$MARKER two" "$MARKER three" "$MARKER refused 22" "$MARKER refused 22" \
    "$MARKER four" "$MARKER five")"
  [[ "$(cat trunc.dec)" == "$expected" ]] || { diff <(echo "$expected") trunc.dec >&2; fail "output lost or changed"; }
  ;;

terminal)
  # A terminal as the console: records as base64 lines, which the line discipline (onlcr:
  # "\n" -> "\r\n") does not break. `script` runs the program on a pty and copies what the
  # terminal shows.
  command -v script > /dev/null || apt-get install -y bsdutils > /dev/null 2>&1
  printf 'echo "%s out"; echo "%s err" >&2; printf "a\\nb\\r\\nc\\n"; head -c 20000 /dev/zero | tr "\\0" x; echo\n' \
    "$MARKER" "$MARKER" > tty.sh
  script -qec "$scone run --console-key-file key -- bash tty.sh" /dev/null > tty.out
  bash tty.sh > tty.native 2>&1
  no_marker tty.out
  grep -q $'\r$' tty.out || fail "the capture did not pass through a terminal's line discipline"
  ! grep -a -q -v '^[A-Za-z0-9+/=]*'$'\r''$' tty.out || fail "something on the terminal is not a record line"
  decrypt tty.out > tty.dec 2> tty.err || { cat tty.err >&2; fail "a terminal's records do not decrypt"; }
  cmp tty.native tty.dec || { diff tty.native tty.dec | head >&2; fail "decrypted output differs from the native run"; }
  # A character changed on a record line: named.
  $PY -c 'import sys; l = open(sys.argv[1], "rb").read().split(b"\n"); c = l[1][20:21]; l[1] = l[1][:20] + (b"B" if c == b"A" else b"A") + l[1][21:]; sys.stdout.buffer.write(b"\n".join(l))' tty.out > tty-flipped.out
  cmp -s tty.out tty-flipped.out && fail "the line was not changed"
  damaged "record 2 .*(authentication failed|not a console record)" tty-flipped.out
  ;;

stdin)
  # `scone run -i`: stdin is sealed input (scone console encrypt); the program and its children
  # read the plaintext, each byte once; damage is EIO and a scone: line, never plaintext.
  printf '%s line 1\n%s line 2\n%s line 3\n' "$MARKER" "$MARKER" "$MARKER" > input.txt
  "$scone" console encrypt --key-file key input.txt > input.sealed
  [[ -s input.sealed ]] || fail "no sealed input"
  ! grep -a -q "$MARKER" input.sealed || fail "plaintext in the sealed input"
  reader='read -r first; echo "parent: $first"; cat; read -r rest || echo "parent: eof"'
  "$scone" run --console-key-file key -i -- bash -c "$reader" < input.sealed > read.out 2>&1 || fail "the reader failed"
  no_marker read.out
  decrypt read.out > read.dec 2>/dev/null || fail "decrypt failed"
  expected="$(printf '%s\n' "parent: $MARKER line 1" "$MARKER line 2" "$MARKER line 3" "parent: eof")"
  [[ "$(cat read.dec)" == "$expected" ]] || { diff <(echo "$expected") read.dec >&2; fail "stdin read by a shell and its child"; }
  # Through a pipe, with a producer that writes as it goes.
  { echo "$MARKER piped"; } | "$scone" console encrypt --key-file key |
    "$scone" run --console-key-file key -i -- $PY -c 'import sys; print("got", sys.stdin.read().strip())' > piped.out 2>&1
  [[ "$(decrypt piped.out 2>/dev/null)" == "got $MARKER piped" ]] || fail "sealed stdin through a pipe"
  # Damage: the program reads what authenticated before it, then EIO; the reason on its stderr.
  cat > reads.py <<'PYEOF'
import os
got = b""
try:
    while True:
        b = os.read(0, 65536)
        if not b:
            print("EOF")
            break
        got += b
except OSError as e:
    print("errno", e.errno)
print("got", len(got), sorted(set(got.decode(errors="replace"))))
PYEOF
  # Larger than an input record (16 KiB): records start, a..., b..., c..., end.
  $PY -c 'import sys; sys.stdout.write("a" * 16384 + "b" * 16384 + "c" * 100)' > lines.txt
  "$scone" console encrypt --key-file key lines.txt > lines.sealed
  $RECORDS lines.sealed list > in.records
  [[ "$(wc -l < in.records)" -eq 5 ]] || fail "input records not as expected"
  # flip record 3, delete record 3, cut, plaintext, other key.
  $RECORDS lines.sealed flip 3 in-flipped
  $RECORDS lines.sealed delete 3 in-deleted
  $RECORDS lines.sealed cut 5 in-cut
  $RECORDS lines.sealed delete "$(wc -l < in.records)" in-no-end
  printf '%s plaintext\n' "$MARKER" > in-plain
  "$scone" console encrypt --key-file other-key input.txt > in-other-key
  for input in in-flipped:"authentication failed" in-deleted:"missing before" in-cut:"cut short" \
               in-no-end:"without its final record" in-plain:"not a console record" in-other-key:"authentication failed"; do
    file="${input%%:*}" why="${input#*:}"
    "$scone" run --console-key-file key -i -- $PY reads.py < "$file" > damaged-in.out 2>&1 || true
    decrypt damaged-in.out > damaged-in.dec 2>/dev/null || fail "$file: the output does not decrypt"
    grep -q "^errno 5$" damaged-in.dec || { cat damaged-in.dec >&2; fail "$file: the program did not get EIO"; }
    grep -q "scone: console stdin: input record .*$why" damaged-in.dec || { cat damaged-in.dec >&2; fail "$file: no reason ($why)"; }
    ! grep -q "EOF" damaged-in.dec || fail "$file: damaged input ended cleanly"
    ! grep -q "plaintext" damaged-in.dec || fail "$file: unauthenticated input reached the program"
  done
  "$scone" run --console-key-file key -i -- $PY reads.py < in-flipped > flipped-read.out 2>/dev/null || true
  grep -q "^got 16384 \\['a'\\]$" <(decrypt flipped-read.out 2>/dev/null) || fail "what authenticated before the damage was not read"
  "$scone" run --console-key-file key -i -- $PY reads.py < lines.sealed > whole-read.out 2>/dev/null
  [[ "$(decrypt whole-read.out 2>/dev/null)" == "EOF"$'\n'"got 32868 ['a', 'b', 'c']" ]] || fail "the whole input"
  # Sealed input from a regular file is a stream, as from a pipe: programs that size a regular
  # stdin or seek in it (wc -c, tail -c) read it instead (before: wc -c printed 0 and exited 0,
  # for a damaged input too; tail -c failed to seek).
  "$scone" run --console-key-file key -i -- wc -c < lines.sealed > wc.out 2>&1
  [[ "$(decrypt wc.out 2>/dev/null)" == 32868 ]] || fail "wc -c of sealed stdin: $(decrypt wc.out 2>&1)"
  "$scone" run --console-key-file key -i -- tail -c 5 < lines.sealed > tail.out 2>&1
  [[ "$(decrypt tail.out 2>/dev/null)" == ccccc ]] || fail "tail -c of sealed stdin: $(decrypt tail.out 2>&1)"
  rc=0; "$scone" run --console-key-file key -i -- wc -c < in-flipped > wc-damaged.out 2>&1 || rc=$?
  (( rc != 0 )) && decrypt wc-damaged.out 2>/dev/null | grep -q "Input/output error" || fail "wc -c of damaged sealed stdin succeeded"
  # -i needs the key.
  rc=0; "$scone" run -i -- true < input.sealed 2> noconsole.err || rc=$?
  [[ $rc -ne 0 ]] && grep -q "needs the console's key" noconsole.err || fail "-i without a key was not refused"
  ;;

script-capture)
  # A terminal session captured by script(1) into a file: its header and footer lines, and blank
  # lines added, are skipped (counted on stderr, never printed); the records decrypt as always,
  # and a changed, removed or reordered record line is still named.
  command -v script > /dev/null || apt-get install -y bsdutils > /dev/null 2>&1
  printf 'echo "%s out"; echo "%s err" >&2; for i in 1 2 3 4 5; do echo "%s line $i"; done
' "$MARKER" "$MARKER" "$MARKER" > tty.sh
  bash tty.sh > tty.native 2>&1
  script -q -c "$scone run --console-key-file key -- bash tty.sh" capture.txt > /dev/null
  grep -q "^Script started on" capture.txt && grep -q "^Script done on" capture.txt || fail "script wrote no header and footer"
  no_marker capture.txt
  printf '

' >> capture.txt
  decrypt capture.txt > capture.dec 2> capture.err || { cat capture.err >&2; fail "a script capture does not decrypt"; }
  cmp tty.native capture.dec || { diff tty.native capture.dec >&2; fail "decrypted capture differs from the native run"; }
  grep -q "line(s) that are no console records skipped" capture.err || fail "the skipped lines are not counted"
  [[ "$(grep -o '[0-9]* line(s) that are no' capture.err | cut -d' ' -f1)" -ge 4 ]] || fail "not every line that is no record counted"
  # Record lines: those of the base64 alphabet alone (one line per record on a terminal).
  mapfile -t lines < <(grep -n -a -E '^[A-Za-z0-9+/=]+'$'\r''$' capture.txt | cut -d: -f1)
  # One process writes them in turn: stdout's start and "out", stderr's start and "err", then the
  # five lines on stdout (records #2 to #6 of its stream), then the ends.
  [[ ${#lines[@]} -eq 11 ]] || fail "records not as expected in the capture: ${#lines[@]} record lines"
  third="${lines[4]}" fifth="${lines[6]}"
  sed "${third}d" capture.txt > capture-removed.txt
  damaged "record #3 follows #1: 1 record\(s\) missing here" capture-removed.txt
  awk -v a="$third" -v b="$fifth" 'NR==FNR {l[FNR]=$0; next} FNR==a {print l[b]; next} FNR==b {print l[a]; next} {print}' \
    capture.txt capture.txt > capture-swapped.txt
  cmp -s capture.txt capture-swapped.txt && fail "the lines were not swapped"
  damaged "record #4 follows #1: 2 record\(s\) missing here" capture-swapped.txt
  $PY -c 'import sys; n = int(sys.argv[2]) - 1; l = open(sys.argv[1], "rb").read().split(b"\n"); c = l[n][30:31]; l[n] = l[n][:30] + (b"B" if c == b"A" else b"A") + l[n][31:]; sys.stdout.buffer.write(b"\n".join(l))' \
    capture.txt "$third" > capture-flipped.txt
  cmp -s capture.txt capture-flipped.txt && fail "the line was not changed"
  damaged "authentication failed|not a console record" capture-flipped.txt
  ! grep -q "Script started" damaged.out || fail "a capture's line was printed"
  ;;

switch-values)
  # SCONE_CONSOLE_SHIELD without CAS: protected (with the key) or disabled, lowercase; anything
  # else refuses to start (exit 1, a scone: line naming the variable), never runs unshielded.
  for value in protcted Protected yes ""; do
    rc=0
    SCONE_CONSOLE_SHIELD="$value" "$scone" run --console-key-file key -- /bin/echo "$MARKER started" > switch.out 2> switch.err || rc=$?
    [[ $rc -eq 1 ]] || fail "SCONE_CONSOLE_SHIELD='$value': exit status $rc, not 1"
    ! grep -a -q "$MARKER" switch.out || fail "SCONE_CONSOLE_SHIELD='$value': the program ran"
    grep -q "^scone: SCONE_CONSOLE_SHIELD: '$value' is not one of disabled, protected" switch.err ||
      { cat switch.err >&2; fail "SCONE_CONSOLE_SHIELD='$value': no scone: line naming the variable"; }
  done
  grep -q "values are lowercase" <(SCONE_CONSOLE_SHIELD=Protected "$scone" run -- /bin/true 2>&1) || fail "no hint at the case"
  SCONE_CONSOLE_SHIELD=protected "$scone" run --console-key-file key -- /bin/echo "$MARKER sealed" > sealed.out 2>&1
  no_marker sealed.out
  [[ "$(decrypt sealed.out 2>/dev/null)" == "$MARKER sealed" ]] || fail "SCONE_CONSOLE_SHIELD=protected with the key"
  [[ "$(SCONE_CONSOLE_SHIELD=disabled "$scone" run -- /bin/echo "$MARKER open" 2>&1)" == "$MARKER open" ]] ||
    fail "SCONE_CONSOLE_SHIELD=disabled"
  ;;

fork-while-writing)
  # The main thread forks children in a loop while another thread prints: the parent announces
  # each child on its stream once glibc's fork let go of the allocator's locks (sealing the
  # announcement inside the fork waited for them forever: a hang in every run).
  cat > forks.py <<'PYEOF'
import os, sys, threading
marker, count = sys.argv[1], int(sys.argv[2])
writing, stop = threading.Event(), threading.Event()
def chatter():
    i = 0
    while not stop.is_set():
        print(f"{marker} thread {i}", flush=True)
        writing.set()
        i += 1
t = threading.Thread(target=chatter)
t.start()
writing.wait()
for c in range(count):
    pid = os.fork()
    if pid == 0:
        os.write(1, f"{marker} child {c}\n".encode())
        os._exit(0)
    os.waitpid(pid, 0)
stop.set()
t.join()
print(f"{marker} parent done", flush=True)
PYEOF
  forks=200
  rc=0
  timeout -k 5 90 "$scone" run --console-key-file key -- $PY forks.py "$MARKER" "$forks" > forks.out 2>&1 || rc=$?
  [[ $rc -eq 0 ]] || fail "forking while a thread writes: exit status $rc (124 or 137: it hung)"
  no_marker forks.out
  # One file per stream: the first process's stdout is stream 1 (python's print may make two
  # writes of a line, and a child's record may land between them).
  mkdir split
  decrypt --split split forks.out 2> forks.err || { cat forks.err >&2; fail "the console of a forking program does not decrypt"; }
  # Every child's stream there, each announced by its parent (else decrypt fails): 2 + 2 per child.
  grep -q "intact: .* $((2 + 2 * forks)) streams" forks.err || { cat forks.err >&2; fail "not one stream per child and channel"; }
  for ((c = 0; c < forks; c++)); do echo "$MARKER child $c"; done | sort > children.expected
  find split -type f ! -name 1.stdout -exec cat {} + | sort | cmp - children.expected ||
    fail "a child's line is missing or changed"
  grep -q "^$MARKER thread " split/1.stdout || fail "the writer thread's lines are missing"
  [[ "$(tail -n 1 split/1.stdout)" == "$MARKER parent done" ]] || fail "the parent's last line is missing"
  ;;

*)
  fail "unknown case $case_name"
  ;;
esac
echo "PASS $case_name"
