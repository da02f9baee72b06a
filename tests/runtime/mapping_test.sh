#!/usr/bin/env bash
# Shared mappings of protected files (runtime/files/mapped_files.h): processes that map one file
# see each other's stores at once, read and write stay coherent with the mappings, what msync
# synced survives a SIGKILL, damage underneath a mapping is an error (never a wrong byte), and a
# program without the volume's key gets no image, nor can it plant one.
# usage: mapping_test.sh SCONE CASE
# After each case: no plaintext marker on disk and `scone volume verify` passes (except where
# the case damages the volume on purpose).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib.sh"
scone="$1"
case_name="$2"
work="$(mktemp -d)"
pids=()
# Background programs run under `run` (a shell function: its pid is a subshell's): their whole
# trees go at the end.
trap '((${#pids[@]} == 0)) || kill_tree "${pids[@]}"; rm -rf "$work"' EXIT
cd "$work"
PY=/usr/bin/python3
MARKER="SCONE-PLAINTEXT-MARKER-$$"
source "$here/volume_lib.sh"

# A file of three chunks of 'a' in the volume.
run "$PY" -c "open('vol/m.dat', 'wb').write(b'a' * 12288)"
mkfifo ready done

# The python prelude every mapping program starts with: the file mapped shared and writable, and
# the two pipes that order the processes (no sleeps).
cat > prelude.py <<'PYEOF'
import mmap, os, sys
fd = os.open("vol/m.dat", os.O_RDWR)
m = mmap.mmap(fd, 12288, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
def signal(name): open(name, "w").write("x")
def wait(name): open(name).read()
PYEOF
# start_a: a.py (a program that maps the file) in the background, output in a.out; returns
# once it signalled "ready".
start_a() {
  run "$PY" a.py > a.out 2>&1 &
  pids+=($!)
  cat ready > /dev/null
}

case "$case_name" in
coherence)
  # Two programs started apart map one file: each sees the other's stores at once (no msync),
  # and a read or write through a descriptor is coherent with the mappings.
  cat > a.py <<PYEOF
exec(open("prelude.py").read())
m[5000:5000 + len(b"$MARKER A")] = b"$MARKER A"
signal("ready")
wait("done")
print(m[9000:9000 + len(b"$MARKER B")] == b"$MARKER B", m[100:110] == b"pwrite-by-", os.pread(fd, 10, 9000) == b"$MARKER"[:10])
PYEOF
  cat > b.py <<PYEOF
exec(open("prelude.py").read())
wait("ready")
print(m[5000:5000 + len(b"$MARKER A")] == b"$MARKER A", os.pread(fd, len(b"$MARKER A"), 5000) == b"$MARKER A")
m[9000:9000 + len(b"$MARKER B")] = b"$MARKER B"
os.pwrite(fd, b"pwrite-by-B", 100)
signal("done")
PYEOF
  run "$PY" a.py > a.out 2>&1 &
  pids+=($!)
  run_for 60 "$PY" b.py > b.out 2>&1 || { cat b.out; fail "the second program failed"; }
  wait "${pids[0]}" || { cat a.out; fail "the first program failed"; }
  [[ "$(cat b.out)" == "True True" ]] || fail "the second program does not see the first one's store: $(cat b.out)"
  [[ "$(cat a.out)" == "True True True" ]] || fail "the first program does not see the second one's stores: $(cat a.out)"
  # After both: the file holds both stores, read by a program that does not map it.
  run "$PY" -c "
d = open('vol/m.dat', 'rb').read()
print(len(d), d[5000:5000 + len(b'$MARKER A')] == b'$MARKER A', d[9000:9000 + len(b'$MARKER B')] == b'$MARKER B', d[100:111] == b'pwrite-by-B', d[0:100] == b'a' * 100)
" > after.out
  [[ "$(cat after.out)" == "12288 True True True True" ]] || fail "the file after both programs: $(cat after.out)"
  check_volume
  ;;

msync-and-kill)
  # A program stores a counter into all three chunks and msyncs, over and over, reporting each
  # synced value; SIGKILL at some point: every chunk then holds one whole value at least as
  # new as the last one reported, and the volume verifies.
  cat > counter.py <<PYEOF
exec(open("prelude.py").read())
out = open("progress", "w")
for i in range(1, 1000000):
    value = (b"$MARKER %08d " % i) * 100
    for c in range(3):
        m[c * 4096:c * 4096 + len(value)] = value
    m.flush()  # msync(MS_SYNC)
    out.write("%d\n" % i); out.flush()
PYEOF
  run "$PY" counter.py 2> counter.err &
  pids+=($!)
  for _ in $(seq 1 600); do [[ -s progress && "$(wc -l < progress)" -ge 20 ]] && break; kill -0 "${pids[0]}" || break; sleep 0.05; done
  [[ "$(wc -l < progress)" -ge 20 ]] || { cat counter.err; fail "the program did not sync 20 times"; }
  pkill -9 -f "counter.py" || true
  wait "${pids[0]}" 2>/dev/null || true
  last=$(tail -n 1 progress)
  run "$PY" -c "
import re
d = open('vol/m.dat', 'rb').read()
values = set()
for c in range(3):
    chunk = d[c * 4096:c * 4096 + 4096]
    found = set(int(v) for v in re.findall(rb'$MARKER (\d{8}) ', chunk))
    assert len(found) == 1, (c, found)
    values |= found
print(min(values) >= $last)
" > after.out 2>&1 || { cat after.out; fail "the file after SIGKILL"; }
  [[ "$(cat after.out)" == True ]] || fail "a value msync had synced is lost (last reported $last)"
  check_volume
  ;;

root-truncates)
  # Root cuts the ciphertext underneath a mapping: sealing it fails with EIO and a scone: line,
  # and the damage stays evident (nothing sealed over it silently).
  cat > a.py <<PYEOF
exec(open("prelude.py").read())
m[0:len(b"$MARKER")] = b"$MARKER"
signal("ready")
wait("done")
m[4096:4096 + len(b"$MARKER")] = b"$MARKER"
try:
    m.flush()
    print("synced")
except OSError as e:
    print("flush:", e.strerror)
PYEOF
  run "$PY" a.py > a.out 2> a.err &
  pids+=($!)
  cat ready >/dev/null
  truncate -s 100 vol/m.dat
  echo x > done
  wait "${pids[0]}" || true
  [[ "$(cat a.out)" == "flush: Input/output error" ]] || { cat a.err; fail "msync over a truncated file: $(cat a.out)"; }
  grep -q "^scone: .*m.dat" a.err || { cat a.err; fail "no scone: line naming the file"; }
  if run cat vol/m.dat > /dev/null 2>&1; then fail "the truncated file reads without an error"; fi
  if "$scone" volume verify vol --key-file key > verify.out 2>&1; then fail "the damage is not evident to verify"; fi
  grep -q "m.dat" verify.out || { cat verify.out; fail "verify does not name the file"; }
  ;;

impostor)
  # A program without the key finds a holder's socket: it gets no image out of it. It listens
  # under the same name prefix itself and hands out a planted memory file: a program of the
  # volume takes nothing from it, and gets the real image from the real holder.
  cat > holder.py <<PYEOF
exec(open("prelude.py").read())
m[0:len(b"$MARKER real")] = b"$MARKER real"
# Its own listeners' names (by socket inode): tests running beside this one have theirs.
def link(f):
    try:
        return os.readlink("/proc/self/fd/" + f)
    except OSError:  # the listing's own descriptor
        return ""
inodes = {link(f)[8:-1] for f in os.listdir("/proc/self/fd") if link(f).startswith("socket:[")}
names = [l.split()[-1][1:] for l in open("/proc/net/unix") if " @scone-image-" in l and l.split()[6] in inodes]
open("holder-names", "w").write("\n".join(names))
signal("ready")
wait("done")
PYEOF
  cat > impostor.py <<'PYEOF'
import array, os, socket, sys
names = sorted(open("holder-names").read().split())
assert names, "no holder's socket listed"
prefix = "-".join(names[0].split("-")[:3]) + "-"
# Ask the holder with a made-up proof.
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(5)
s.connect("\0" + names[0])
s.send(b"scone-image-v2\0\0" + os.urandom(32))
answer = s.recv(100)
s.send(os.urandom(32))
msg, fds, flags, _ = socket.recv_fds(s, 1, 1)
print("holder answered", len(answer), "and gave", len(fds), "descriptors")
# Plant: a memory file with other content, under the holder's name prefix.
planted = os.memfd_create("planted")
os.write(planted, b"PLANTED" * 2000)
l = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
l.bind("\0" + prefix + "ffffffffffffffff")
l.listen(8)
print("listening", flush=True)
c, _ = l.accept()
c.recv(100)
c.send(os.urandom(64))  # a nonce and a proof it cannot compute
try:
    socket.send_fds(c, [b"x"], [planted])
except OSError:
    pass
print("asked")
PYEOF
  run "$PY" holder.py > holder.out 2>&1 &
  pids+=($!)
  cat ready >/dev/null
  timeout 60 "$PY" impostor.py > impostor.out 2>&1 &
  pids+=($!)
  wait_for_line impostor.out "^listening" "${pids[1]}"
  grep -q "^holder answered 64 and gave 0 descriptors$" impostor.out || { cat impostor.out; fail "the holder answered a program without the key"; }
  run_for 60 "$PY" -c "
import mmap, os
fd = os.open('vol/m.dat', os.O_RDWR)
m = mmap.mmap(fd, 12288, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
print(m[0:len(b'$MARKER real')] == b'$MARKER real', b'PLANTED' in m[:])
" > newcomer.out 2> newcomer.err || { cat newcomer.err; fail "the newcomer failed"; }
  [[ "$(cat newcomer.out)" == "True False" ]] || fail "the newcomer did not get the holder's image: $(cat newcomer.out)"
  echo x > done
  wait "${pids[0]}" || fail "the holder failed"
  kill "${pids[1]}" 2>/dev/null || true
  check_volume
  ;;

relay)
  # A program without the key sits between a process that maps the file and a holder: it binds
  # the name a holder let go of (names verify by their MAC, so it replays one) and relays the
  # messages both ways. The proofs bind each side's process id as the kernel reports it: the
  # holder gives it nothing, the asker takes nothing from it and gets the real image elsewhere.
  cat > h.py <<PYEOF
import mmap, os, sys
def names(): return {l.split()[-1][1:] for l in open("/proc/net/unix") if " @scone-image-" in l}
before = names()
fd = os.open("vol/m.dat", os.O_RDWR)
m = mmap.mmap(fd, 12288, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
if sys.argv[1] == "first":
    m[0:len(b"$MARKER real")] = b"$MARKER real"
    open("first-name", "w").write((names() - before).pop())
    m.close()  # lets its name go (and exits)
else:
    open("second-name", "w").write((names() - before).pop())
    open("second-ready", "w").write("x")
    open("done-second").read()
PYEOF
  cat > relay.py <<'PYEOF'
import os, socket
name = open("first-name").read()
prefix = "-".join(name.split("-")[:3]) + "-"
others = sorted({l.split()[-1][1:] for l in open("/proc/net/unix") if " @" + prefix in l} - {name})
l = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
l.bind("\0" + name)
l.listen(8)
l.settimeout(30)
print("listening", flush=True)
c, _ = l.accept()
h = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
h.settimeout(5)
h.connect("\0" + others[0])
h.send(c.recv(100))
c.send(h.recv(100))
h.send(c.recv(100))
try:
    _, fds, _, _ = socket.recv_fds(h, 1, 4)
except (OSError, socket.timeout):
    fds = []
planted = os.memfd_create("planted")
os.write(planted, b"PLANTED" * 2000)
try:
    socket.send_fds(c, [b"x"], fds or [planted])
except OSError:
    pass
print("relayed, holder gave", len(fds), "descriptors", flush=True)
PYEOF
  mkfifo second-ready done-second
  # Holders' names are random and askers go in name order: the holder maps again until its name
  # lies in the upper half, then the first program maps again (a fresh name) until its name comes
  # before the holder's (each time with probability 1/2 at least).
  export LC_ALL=C  # byte order, as the runtime sorts
  for attempt in $(seq 1 20); do
    run "$PY" h.py second > second.out 2>&1 &
    pids+=($!)
    cat second-ready > /dev/null
    [[ "$(cut -d- -f4 second-name)" > 8 ]] && break
    echo x > done-second
    wait "${pids[-1]}" || fail "the holder failed"
    unset 'pids[-1]'
  done
  holder=${pids[-1]}
  for attempt in $(seq 1 20); do
    run "$PY" h.py first > first.out 2>&1 || { cat first.out; fail "the first program failed"; }
    prefix="$(cut -d- -f1-3 first-name)-"
    [[ "$(cat first-name)" < "$(grep -o "$prefix[0-9a-f-]*" /proc/net/unix | sort | head -n1)" ]] && break
  done
  timeout 60 "$PY" relay.py > relay.out 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do grep -q "^listening" relay.out && break; kill -0 "${pids[-1]}" 2>/dev/null || { cat relay.out; fail "the relay did not start"; }; sleep 0.05; done
  run_for 60 "$PY" -c "
import mmap, os
fd = os.open('vol/m.dat', os.O_RDWR)
m = mmap.mmap(fd, 12288, mmap.MAP_SHARED, mmap.PROT_READ)
print(m[0:len(b'$MARKER real')] == b'$MARKER real', b'PLANTED' in m[:])
" > newcomer.out 2> newcomer.err || { cat newcomer.err; fail "the newcomer failed"; }
  [[ "$(cat newcomer.out)" == "True False" ]] || fail "the newcomer did not get the holder's image: $(cat newcomer.out)"
  wait "${pids[-1]}" || true
  grep -q "^relayed, holder gave 0 descriptors$" relay.out || { cat relay.out first.out second.out newcomer.err; fail "the holder answered through a relay"; }
  echo x > done-second
  wait "$holder" || fail "the holder failed"
  check_volume
  ;;

fork-child-serves)
  # A forked child keeps the parent's mapping after the parent exits, and serves its image: a
  # program started later sees what the child stored after the parent had gone.
  cat > parent.py <<PYEOF
exec(open("prelude.py").read())
m[0:len(b"$MARKER parent")] = b"$MARKER parent"
if os.fork() == 0:
    wait("ready")  # the parent has exited
    m[4096:4096 + len(b"$MARKER child")] = b"$MARKER child"
    signal("done")
    wait("ready")  # the newcomer has looked
    os._exit(0)
PYEOF
  run "$PY" parent.py > parent.out 2>&1 || { cat parent.out; fail "the parent failed"; }
  echo x > ready
  cat done > /dev/null
  run_for 60 "$PY" -c "
import mmap, os
fd = os.open('vol/m.dat', os.O_RDWR)
m = mmap.mmap(fd, 12288, mmap.MAP_SHARED, mmap.PROT_READ)
print(m[0:len(b'$MARKER parent')] == b'$MARKER parent', m[4096:4096 + len(b'$MARKER child')] == b'$MARKER child')
" > newcomer.out 2>&1 || { cat newcomer.out; fail "the newcomer failed"; }
  echo x > ready
  [[ "$(cat newcomer.out)" == "True True" ]] || fail "the newcomer does not see the child's store: $(cat newcomer.out)"
  check_volume
  ;;

adopter-after-writer)
  # One process maps the file (read-only); another writes it without mapping it and syncs; a
  # third then maps it writable and unmaps without storing a byte. The image the third adopts is
  # older than the file: its seal took the image's stale bytes for stores and wrote them over
  # the synced write (hostile finding). Now the adopter merges against the holder's base: the
  # write stays, and both mappings see it, as the page cache shows it natively.
  cat > holder.py <<PYEOF
import mmap, os
fd = os.open("vol/m.dat", os.O_RDONLY)
m = mmap.mmap(fd, 12288, mmap.MAP_SHARED, mmap.PROT_READ)
open("ready", "w").write("x")
open("done").read()
print(m[100:100 + len(b"$MARKER C")] == b"$MARKER C")
PYEOF
  run "$PY" holder.py > holder.out 2>&1 &
  pids+=($!)
  cat ready > /dev/null
  run_for 60 "$PY" -c "
import os
fd = os.open('vol/m.dat', os.O_RDWR)
os.pwrite(fd, b'$MARKER C', 100)
os.fsync(fd)
" || fail "the writer failed"
  run_for 60 "$PY" -c "
import mmap, os
fd = os.open('vol/m.dat', os.O_RDWR)
m = mmap.mmap(fd, 12288, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
print(m[100:100 + len(b'$MARKER C')] == b'$MARKER C')
m.close()
" > adopter.out || fail "the adopter failed"
  echo x > done
  wait "${pids[-1]}" || { cat holder.out; fail "the holder failed"; }
  [[ "$(cat adopter.out) $(cat holder.out)" == "True True" ]] ||
    fail "a mapping does not show the synced write (adopter, holder): $(cat adopter.out) $(cat holder.out)"
  [[ "$(run "$PY" -c "print(open('vol/m.dat', 'rb').read()[100:100 + len(b'$MARKER C')] == b'$MARKER C')")" == True ]] ||
    fail "the synced write was lost: the adopter's seal wrote the image's stale bytes over it"
  check_volume
  ;;
store-undone-after-a-seal)
  # Two programs map the file. The first stores a marker, syncs it (msync) and stores the old
  # bytes back; the second then syncs. Natively the mappings show the old bytes throughout. Each
  # process merged its seals against a base of its own: the second's (older than the first's
  # seal) took the undone store for a write by a process without the mapping and put the marker
  # back into the memory both map (SQLite's WAL index, whose counters go back and forth, was
  # corrupted so with three writers; found by a hostile tester). Holders of an image now share
  # its base.
  cat > a.py <<PYEOF
exec(open("prelude.py").read())
signal("ready")
wait("done")  # the second program maps the file
m[0:len(b"$MARKER")] = b"$MARKER"
m.flush()
m[0:len(b"$MARKER")] = b"a" * len(b"$MARKER")
signal("ready")
wait("done")  # the second program synced
print(m[0:len(b"$MARKER")] == b"a" * len(b"$MARKER"), os.pread(fd, len(b"$MARKER"), 0) == b"a" * len(b"$MARKER"))
PYEOF
  start_a
  run_for 60 "$PY" -c "
exec(open('prelude.py').read())
signal('done')
wait('ready')
m.flush()
signal('done')
" || fail "the second program failed"
  wait "${pids[-1]}" || { cat a.out; fail "the first program failed"; }
  [[ "$(cat a.out)" == "True True" ]] || fail "the undone store came back into the mapping (mapping, read): $(cat a.out)"
  [[ "$(run "$PY" -c "print(open('vol/m.dat', 'rb').read(len(b'$MARKER')) == b'a' * len(b'$MARKER'))")" == True ]] ||
    fail "the undone store came back into the file"
  check_volume
  ;;
map-again)
  # A program maps the file, unmaps it (its image goes) and maps it again: its new image's
  # listener often got the descriptor number of the old one, which its runtime thread took for
  # the one it watched already, so it never answered; another program mapping the file then
  # waited 10 s and was refused (hostile finding with four SQLite writers, which remap as the
  # database grows).
  cat > a.py <<PYEOF
exec(open("prelude.py").read())
m.close()
m = mmap.mmap(fd, 12288, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[0:len(b"$MARKER again")] = b"$MARKER again"
signal("ready")
wait("done")
PYEOF
  start_a
  run_for 60 "$PY" -c "
exec(open('prelude.py').read())
print(m[0:len(b'$MARKER again')] == b'$MARKER again')
" > b.out 2>&1 || true
  echo x > done
  wait "${pids[-1]}" || { cat a.out; fail "the first program failed"; }
  [[ "$(cat b.out)" == True ]] || fail "the second program did not get the remapped image: $(cat b.out)"
  check_volume
  ;;
descriptors-without-mapping)
  # While one program maps the file, another that only reads and writes it (no mapping, no lock,
  # no sync) sees the first one's stores at once, and the first sees its writes, an append and
  # the new size at once, as both would through the kernel's page cache. Before, the second
  # read and wrote the protected file: each saw the other only at the mapper's next seal.
  cat > a.py <<PYEOF
exec(open("prelude.py").read())
m[5000:5000 + len(b"$MARKER A")] = b"$MARKER A"
signal("ready")
wait("done")
print(m[9000:9000 + len(b"$MARKER B")] == b"$MARKER B", os.pread(fd, 10, 12288) == b"appended-1", os.fstat(fd).st_size)
PYEOF
  start_a
  run_for 60 "$PY" -c "
import os
fd = os.open('vol/m.dat', os.O_RDWR)
print(os.pread(fd, len(b'$MARKER A'), 5000) == b'$MARKER A')
os.pwrite(fd, b'$MARKER B', 9000)
ap = os.open('vol/m.dat', os.O_WRONLY | os.O_APPEND)
os.write(ap, b'appended-1')
open('done', 'w').write('x')
" > b.out 2>&1 || { cat b.out; fail "the program without a mapping failed"; }
  wait "${pids[-1]}" || { cat a.out; fail "the mapping program failed"; }
  [[ "$(cat b.out)" == True ]] || fail "a read does not see the mapping's store at once: $(cat b.out)"
  [[ "$(cat a.out)" == "True True 12298" ]] || fail "the mapping does not see the other's writes at once (mapping, append, size): $(cat a.out)"
  [[ "$(run "$PY" -c "d = open('vol/m.dat', 'rb').read(); print(len(d), d[5000:5000 + len(b'$MARKER A')] == b'$MARKER A', d[9000:9000 + len(b'$MARKER B')] == b'$MARKER B')")" == "12298 True True" ]] ||
    fail "the file after both programs"
  check_volume
  ;;
store-of-a-killed-mapper)
  # A program maps the file and stores, then dies (SIGKILL) without msync; another program that
  # reads the file through a descriptor (and so holds the image too) saw the store, syncs and
  # closes. Natively the store survives in the page cache. The survivor's seal compared only
  # what it had written itself: the store it had read, and synced, was gone from the file
  # (hostile finding). A seal now takes every chunk that differs from the base, whoever stored.
  cat > a.py <<PYEOF
exec(open("prelude.py").read())
signal("ready")
wait("done")
m[20:20 + len(b"$MARKER K")] = b"$MARKER K"
os.kill(os.getpid(), 9)
PYEOF
  run "$PY" a.py > a.out 2>&1 &
  pids+=($!)
  cat ready > /dev/null
  run_for 60 "$PY" -c "
import os
fd = os.open('vol/m.dat', os.O_RDWR)
os.pread(fd, 1, 0)
open('done', 'w').write('x')
while os.pread(fd, len(b'$MARKER K'), 20) != b'$MARKER K': os.sched_yield()
os.fsync(fd)
os.close(fd)
" > b.out 2>&1 || { cat b.out; fail "the survivor failed"; }
  wait "${pids[-1]}" || true
  [[ "$(run "$PY" -c "print(open('vol/m.dat', 'rb').read()[20:20 + len(b'$MARKER K')] == b'$MARKER K')")" == True ]] ||
    fail "the killed mapper's store, read and synced by the survivor, is not in the file"
  check_volume
  ;;
sqlite-mmap-reader)
  # A sqlite3 reader with PRAGMA mmap_size (it maps the database) stays open while another
  # sqlite3 (without) inserts 1000 rows; the reader must count them, and its own insert must
  # keep them (hostile finding: it missed them, and its insert lost them and corrupted the
  # database).
  ins="WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<1000) INSERT INTO t SELECT '$MARKER' || i FROM c;"
  run sqlite3 vol/db "CREATE TABLE t(x); $ins"
  mkfifo cmds
  run sqlite3 vol/db < cmds > reader.out 2>&1 &
  pids+=($!)
  exec 3> cmds
  echo "PRAGMA mmap_size=268435456; SELECT 'r1', count(*) FROM t;" >&3
  echo ".shell echo x > ready" >&3
  cat ready > /dev/null  # the reader has read (and mapped) the database
  [[ "$(run sqlite3 vol/db "$ins SELECT count(*) FROM t;")" == 2000 ]] || fail "the writer's insert"
  echo "SELECT 'r2', count(*) FROM t; INSERT INTO t SELECT x FROM t LIMIT 10; SELECT 'r3', count(*) FROM t; PRAGMA integrity_check;" >&3
  exec 3>&-
  wait "${pids[-1]}" || { cat reader.out; fail "the reader failed"; }
  [[ "$(tr '\n' ' ' < reader.out)" == "268435456 r1|1000 r2|2000 r3|2010 ok " ]] || fail "the mapping reader: $(cat reader.out)"
  [[ "$(run sqlite3 vol/db "SELECT count(*) FROM t; PRAGMA integrity_check;" | tr '\n' ' ')" == "2010 ok " ]] ||
    fail "the database after the reader's insert: $(run sqlite3 vol/db 'SELECT count(*) FROM t; PRAGMA integrity_check;' 2>&1)"
  check_volume
  ;;
writer-without-mapping)
  # A program that writes the file without mapping it (pwrite into another chunk and into other
  # bytes of the chunk the mapping stores to, an append) while another maps it writable: the
  # mapping's seal keeps those writes (it wrote its stale copy over them), and the mapping sees
  # them from the seal on.
  cat > a.py <<PYEOF
exec(open("prelude.py").read())
m[0:len(b"$MARKER A")] = b"$MARKER A"
signal("ready")
wait("done")
m.flush()
print(os.fstat(fd).st_size, m[9000:9000 + len(b"$MARKER B")] == b"$MARKER B", m[200:210] == b"by-writer!", os.pread(fd, 10, 12288) == b"appended-1")
PYEOF
  start_a
  run_for 60 "$PY" -c "
import os
fd = os.open('vol/m.dat', os.O_RDWR)
os.pwrite(fd, b'$MARKER B', 9000)
os.pwrite(fd, b'by-writer!', 200)
os.close(fd)
open('vol/m.dat', 'ab').write(b'appended-1')
" || fail "the writer failed"
  echo x > done
  wait "${pids[-1]}" || { cat a.out; fail "the mapping program failed"; }
  [[ "$(cat a.out)" == "12298 True True True" ]] || fail "the mapping does not see the other writes after msync: $(cat a.out)"
  run_for 60 "$PY" -c "
d = open('vol/m.dat', 'rb').read()
print(len(d), d[0:len(b'$MARKER A')] == b'$MARKER A', d[9000:9000 + len(b'$MARKER B')] == b'$MARKER B', d[200:210] == b'by-writer!', d[12288:] == b'appended-1')
" > after.out
  [[ "$(cat after.out)" == "12298 True True True True" ]] || fail "a write of the program without a mapping was lost: $(cat after.out)"
  check_volume
  ;;

fork-at-first-map)
  # A process's first shared mapping starts the runtime's thread that serves its image; a fork
  # right after it must not wait forever for that thread (it once held the descriptor table's
  # lock while glibc's fork held the allocator's). Many children race their first map with a fork.
  run "$PY" -c "open('vol/n.dat', 'wb').write(b'n' * 8192)"
  run_for 120 "$PY" -c "
import mmap, os, signal
for i in range(150):
    child = os.fork()
    if child == 0:
        fd = os.open('vol/n.dat', os.O_RDWR)
        m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        grandchild = os.fork()
        if grandchild == 0:
            os._exit(0)
        os.waitpid(grandchild, 0)
        os._exit(0 if m[0:1] == b'n' else 3)
    def stuck(*_):  # a child stuck in its fork fails the case (and goes)
        os.kill(child, signal.SIGKILL)
        print('child', i, 'stuck', flush=True)
        os._exit(4)
    signal.signal(signal.SIGALRM, stuck)
    signal.alarm(20)
    _, status = os.waitpid(child, 0)
    signal.alarm(0)
    assert status == 0, (i, status)
print('forked', i + 1)
" > forks.out 2>&1 || { cat forks.out; fail "a child that forked right after its first shared mapping did not finish"; }
  grep -q "^forked 150$" forks.out || fail "not every child forked: $(cat forks.out)"
  check_volume
  ;;

*)
  fail "unknown case $case_name"
  ;;
esac
echo "ok: $case_name"
