#!/usr/bin/env bash
# The network shield with unmodified programs under `scone run`: TLS 1.3 on the connections the
# rules name, with no TLS in the programs' own configuration.
# usage: network_test.sh SCONE CASE
# Certificates are made with the openssl command; a relay in plain python between client and
# server logs every byte that crosses the wire, and no plaintext marker may be among them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib.sh"
scone="$1"
case_name="$2"
work="$(mktemp -d)"
pids=()
cleanup() {
  ((${#pids[@]} == 0)) || { kill_tree "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true; }
  [[ -z "${capture_pid:-}" ]] || kill_tree "$capture_pid"
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
PY=/usr/bin/python3
MARKER="SCONE-NET-MARKER-$$"

# A CA, a server certificate for localhost (and 127.0.0.1), a client certificate; another CA.
make_certificates() {
  local o="-nodes -days 2 -newkey ec -pkeyopt ec_paramgen_curve:P-256"
  openssl req -x509 $o -keyout ca.key -out ca.crt -subj /CN=scone-test-ca 2>/dev/null
  openssl req -x509 $o -keyout other-ca.key -out other-ca.crt -subj /CN=other-ca 2>/dev/null
  openssl req $o -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > server.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 \
    -extfile server.ext 2>/dev/null
  openssl req $o -keyout client.key -out client.csr -subj /CN=shielded-client 2>/dev/null
  openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2 2>/dev/null
  # A server certificate for localhost from the other CA.
  openssl req $o -keyout impostor.key -out impostor.csr -subj /CN=localhost 2>/dev/null
  openssl x509 -req -in impostor.csr -CA other-ca.crt -CAkey other-ca.key -CAcreateserial -out impostor.crt \
    -days 2 -extfile server.ext 2>/dev/null
}


# wait_for_port PORT PID: until something listens on PORT, while PID lives; fails the test if not.
wait_for_port() { port_listening "$1" "$2" || fail "nothing listens on $1 (process $2: $(kill -0 "$2" 2>/dev/null && echo alive || echo exited))"; }

# server_rule NAME PORT CLIENT_AUTH [CERT KEY]: the environment of a protected server rule.
server_env() {
  local name="$1" port="$2" auth="$3" cert="${4:-server.crt}" key="${5:-server.key}"
  echo "SCONE_NETWORK_SHIELD_SERVER_$name=protected"
  echo "SCONE_NETWORK_SHIELD_SERVER_${name}_PORT=TCP:$port"
  echo "SCONE_NETWORK_SHIELD_SERVER_${name}_IDENTITY=$(cat "$key" "$cert")"
  echo "SCONE_NETWORK_SHIELD_SERVER_${name}_CLIENT_AUTH=$auth"
}

# client_env NAME DESTINATION [VAR=VALUE...]: the environment of a protected client rule whose
# server's certificate chains to ca.crt, with more of the rule's attributes (SERVER_DNS_NAME=...).
client_env() {
  local name="$1" destination="$2"
  shift 2
  echo "SCONE_NETWORK_SHIELD_CLIENT_$name=protected"
  echo "SCONE_NETWORK_SHIELD_CLIENT_${name}_DESTINATION=$destination"
  echo "SCONE_NETWORK_SHIELD_CLIENT_${name}_SERVER_AUTH=$(cat ca.crt)"
  for attribute in "$@"; do echo "SCONE_NETWORK_SHIELD_CLIENT_${name}_$attribute"; done
}

# start_http_server PORT ENV-FILE: python3's http.server over www/ under `scone run` with the
# rules in ENV-FILE (NAME=VALUE lines, values may span lines); its log in http.log.
start_http_server() {
  mkdir -p www && echo "$MARKER file content" > www/index.html
  env_from "$2" "$scone" run -- "$PY" -m http.server -d www -b 127.0.0.1 "$1" > http.log 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  wait_for_port "$1" "$server_pid"
}

# start_shielded_redis PORT RULE: redis-server (no persistence) under `scone run` behind the
# protected server rule RULE on PORT, client auth off; its log in redis.log.
start_shielded_redis() {
  server_env "$2" "$1" disabled > redis.env
  env_from redis.env "$scone" run -- redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no \
    > redis.log 2>&1 &
  pids+=($!)
  wait_for_port "$1" "${pids[-1]}"
}

# env_from FILE PROGRAM...: PROGRAM with the variables of FILE (as server_env prints them) added,
# in place of the caller (exec: `env_from ... &` leaves $! the program's own pid, which cleanup
# kills).
env_from() {
  local file="$1"
  shift
  exec "$PY" - "$file" "$@" <<'PYEOF'
import os, re, sys
text = open(sys.argv[1]).read()
env = dict(os.environ)
for m in re.finditer(r"^(SCONE_NETWORK_SHIELD\w*)=(.*?)(?=^SCONE_NETWORK_SHIELD|\Z)", text, re.M | re.S):
    env[m.group(1)] = m.group(2).rstrip("\n")
os.execvpe(sys.argv[2], sys.argv[2:], env)
PYEOF
}

# start_relay LISTEN_PORT TARGET_PORT LOG: a plain TCP relay that appends every byte it passes
# (both ways) to LOG.
start_relay() {
  "$PY" "$here/../relay.py" "$1" "$2" "$3" &
  relay_pid=$!
  pids+=("$relay_pid")
  wait_for_port "$1" "$relay_pid"
}

# No plaintext marker crossed the relay, and TLS records did (a handshake record: 0x16 0x03).
check_wire() {
  [[ -s "$1" ]] || fail "nothing crossed the relay"
  "$PY" - "$1" "$MARKER" <<'PYEOF' || fail "plaintext on the wire"
import sys
data = open(sys.argv[1], "rb").read()
assert sys.argv[2].encode() not in data, "marker found in %d bytes" % len(data)
assert data.startswith(b"\x16\x03"), "not TLS: %r" % data[:16]
PYEOF
}

make_certificates

case "$case_name" in
http-server)
  # python3 -m http.server, unmodified, behind a server rule: curl verifies it with the CA and
  # talks TLS 1.3; plaintext is refused with a `scone:` line naming the rule, and the server
  # goes on serving.
  port=$(free_port)
  server_env WEB "$port" disabled > rules.env
  start_http_server "$port" rules.env
  start_capture wire.pcap "$port"
  curl -sS -v --cacert ca.crt "https://localhost:$port/index.html" > body 2> curl.log || { cat curl.log http.log; fail "curl over TLS"; }
  [[ "$(cat body)" == "$MARKER file content" ]] || fail "body over TLS"
  stop_capture wire.pcap
  check_capture wire.pcap "$MARKER"
  grep -q "SSL connection using TLSv1.3" curl.log || { cat curl.log; fail "not TLS 1.3"; }
  grep -q "subject: CN=localhost" curl.log || fail "curl did not see the server's certificate"
  grep -q "issuer: CN=scone-test-ca" curl.log || fail "curl did not see the CA"
  if curl -sS -m 5 "http://127.0.0.1:$port/index.html" > plain.out 2>&1; then fail "plaintext HTTP was served"; fi
  ! grep -q "$MARKER" plain.out || fail "plaintext reply carried the file"
  grep -q "scone: network shield: server rule WEB: connection with 127.0.0.1:[0-9]* failed: handshake" http.log ||
    { cat http.log; fail "no scone: line naming the rule"; }
  ! grep -q "Traceback" http.log || { cat http.log; fail "the server saw more than the end of a stream"; }
  # A client of another CA's trust does not accept the server.
  if curl -sS -m 5 --cacert other-ca.crt "https://localhost:$port/index.html" >/dev/null 2>&1; then
    fail "curl accepted a server its CA did not certify"
  fi
  curl -sS --cacert ca.crt "https://localhost:$port/index.html" > body2 || fail "the server stopped serving"
  [[ "$(cat body2)" == "$MARKER file content" ]] || fail "body after the refusals"
  # The host sees no key in the program's environment.
  for p in $(pgrep -P "$server_pid" || true) "$server_pid"; do
    ! tr '\0' '\n' < "/proc/$p/environ" | grep -q "PRIVATE KEY\|SCONE_NETWORK_SHIELD" ||
      fail "the identity is in /proc/$p/environ"
  done
  ;;

mutual-tls)
  # A shielded python3 client (urllib, plain http://) and the shielded http.server, mutual TLS
  # through a relay that logs the wire: the marker is in the file served and in the request's
  # path, and never on the wire.
  port=$(free_port)
  relay=$(free_port)
  server_env WEB "$port" "$(cat ca.crt)" > rules.env
  start_http_server "$port" rules.env
  start_relay "$relay" "$port" wire.log
  start_capture wire.pcap "$port" "$relay"
  client_env API "TCP:127.0.0.1:$relay" SERVER_DNS_NAME=localhost "IDENTITY=$(cat client.key client.crt)" > client.env
  cat > client.py <<PYEOF
import urllib.request, urllib.error, sys
body = urllib.request.urlopen("http://127.0.0.1:$relay/index.html").read()
assert body == b"$MARKER file content\n", body
try:
    urllib.request.urlopen("http://127.0.0.1:$relay/$MARKER-in-the-path")
except urllib.error.HTTPError as e:
    assert e.code == 404
print("client ok")
PYEOF
  (env_from client.env timeout -s KILL 20 "$scone" run -- "$PY" client.py) > client.out 2>&1 ||
    { cat client.out http.log; fail "shielded client"; }
  grep -q "client ok" client.out || fail "client"
  grep -q "GET /$MARKER-in-the-path" http.log || fail "the server did not get the client's request"
  check_wire wire.log
  stop_capture wire.pcap
  check_capture wire.pcap "$MARKER"
  # Without its certificate the client is refused; the server names the rule and goes on.
  "$PY" - client.env <<'PYEOF'
import re, sys
text = open(sys.argv[1]).read()
text = re.sub(r"^SCONE_NETWORK_SHIELD_CLIENT_API_IDENTITY=.*?(?=^SCONE_NETWORK_SHIELD|\Z)", "", text, flags=re.M | re.S)
open("anonymous.env", "w").write(text)
PYEOF
  if (env_from anonymous.env timeout -s KILL 20 "$scone" run -- "$PY" client.py) > anonymous.out 2>&1; then
    fail "a client without a certificate was served"
  fi
  grep -q "scone: network shield: server rule WEB: .*failed: handshake: .*certificate" http.log ||
    { cat http.log; fail "no scone: line for the client without a certificate"; }
  if curl -sS -m 5 --cacert ca.crt "https://localhost:$port/index.html" >/dev/null 2>&1; then
    fail "curl without a client certificate was served"
  fi
  curl -sS --cacert ca.crt --cert client.crt --key client.key "https://localhost:$port/index.html" > body ||
    fail "curl with the client certificate"
  [[ "$(cat body)" == "$MARKER file content" ]] || fail "body with the client certificate"
  check_wire wire.log
  ;;

fast-open-and-unspecified)
  # Two ways past connect(2) a rule must still judge (hostile findings): TCP Fast Open
  # (sendto and sendmsg with MSG_FASTOPEN connect as they send) and the unspecified address as a
  # destination (0.0.0.0 and [::] reach the loopback), and the host's other addresses that reach
  # a listener bound to the wildcard (127.0.0.2, an interface's address). A refuse rule names
  # localhost:PORT (127.0.0.1 and ::1), where plain sinks log whatever arrives: nothing may.
  port=$(free_port)
  cat > sink.py <<PYEOF
import socket, sys, threading
def serve(family, host):
    s = socket.socket(family)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, $port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        data = c.recv(4096)
        with open("sink.log", "ab") as f:
            f.write(data)
        c.close()
threading.Thread(target=serve, args=(socket.AF_INET6, "::1"), daemon=True).start()
serve(socket.AF_INET, "0.0.0.0")
PYEOF
  "$PY" sink.py > sink.out 2>&1 &
  pids+=($!)
  wait_for_port "$port" "${pids[-1]}"
  : > sink.log
  # An address of this host's that is not the loopback (the loopback again if there is none).
  host_ip=$(ip -o -4 addr show scope global 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -1)
  host_ip=${host_ip:-127.0.0.3}
  cat > tries.py <<PYEOF
import socket
def attempt(name, f):
    try:
        f()
        print(name, "sent")
    except OSError as e:
        print(name, e.errno)
def fast_open_sendto():
    s = socket.socket()
    s.sendto(b"$MARKER tfo", socket.MSG_FASTOPEN, ("127.0.0.1", $port))
def fast_open_sendmsg():
    s = socket.socket()
    s.sendmsg([b"$MARKER tfo-msg"], [], socket.MSG_FASTOPEN, ("127.0.0.1", $port))
def any4():
    socket.create_connection(("0.0.0.0", $port)).sendall(b"$MARKER any4")
def any6():
    s = socket.socket(socket.AF_INET6)
    s.connect(("::", $port))
    s.sendall(b"$MARKER any6")
def loopback2():
    socket.create_connection(("127.0.0.2", $port)).sendall(b"$MARKER loopback2")
def interface():
    socket.create_connection(("$host_ip", $port)).sendall(b"$MARKER interface")
for name, f in [("sendto", fast_open_sendto), ("sendmsg", fast_open_sendmsg), ("any4", any4), ("any6", any6),
                ("loopback2", loopback2), ("interface", interface)]:
    attempt(name, f)
PYEOF
  SCONE_NETWORK_SHIELD_CLIENT_SINK=refuse SCONE_NETWORK_SHIELD_CLIENT_SINK_DESTINATION="TCP:localhost:$port" \
    "$scone" run -- "$PY" tries.py > tries.out 2> tries.err || { cat tries.err; fail "the program failed"; }
  [[ "$(cat tries.out)" == $'sendto 111\nsendmsg 111\nany4 111\nany6 111\nloopback2 111\ninterface 111' ]] ||
    { cat tries.out tries.err; fail "a connection past the refuse rule: $(tr '\n' ' ' < tries.out)"; }
  [[ "$(grep -c "refused by client rule SINK" tries.err)" == 6 ]] || { cat tries.err; fail "not six scone: lines naming the rule"; }
  ! grep -q "$MARKER" sink.log || fail "plaintext reached the sink: $(cat sink.log)"
  ;;

fork-owner)
  # After fork, parent and child hold one TLS state: if both sealed records with it, two records
  # would share an AES-GCM nonce. The first process to use the connection after the fork owns it;
  # the other gets EIO and a scone: line. The server is python3's ForkingTCPServer (the classic
  # server that forks a child per connection and closes its own copy): every child serves.
  port=$(free_port)
  relay=$(free_port)
  server_env ECHO "$port" "$(cat ca.crt)" > rules.env
  cat > echo_server.py <<PYEOF
import socketserver
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(b"got " + line)
socketserver.ForkingTCPServer.allow_reuse_address = True
socketserver.ForkingTCPServer(("127.0.0.1", $port), Echo).serve_forever()
PYEOF
  env_from rules.env "$scone" run -- "$PY" echo_server.py > server.log 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  wait_for_port "$port" "$server_pid"
  start_relay "$relay" "$port" wire.log
  client_env ECHO "TCP:127.0.0.1:$relay" SERVER_DNS_NAME=localhost "IDENTITY=$(cat client.key client.crt)" > client.env
  cat > client.py <<PYEOF
import errno, os, socket
def connect():
    s = socket.create_connection(("127.0.0.1", $relay))
    return s, s.makefile("rb")
def talk(s, f, what):
    s.sendall(what.encode() + b"\n")
    reply = f.readline()
    assert reply == b"got " + what.encode() + b"\n", reply
def refused(call):
    try:
        call()
    except OSError as e:
        return e.errno == errno.EIO
    return False

# 1. The parent used the connection before the fork; the child uses it first after: the child
#    owns it, the parent's write fails (it would have reused the child's nonces).
s, f = connect()
talk(s, f, "before-fork-$MARKER")
pid = os.fork()
if pid == 0:
    talk(s, f, "child-$MARKER")
    talk(s, f, "child-again-$MARKER")
    os._exit(0)
assert os.waitpid(pid, 0)[1] == 0, "child 1"
assert refused(lambda: s.sendall(b"parent-$MARKER\n")), "the parent wrote after the child"
assert refused(lambda: s.recv(10)), "the parent read after the child"
s.close()

# 2. The parent goes on first: the child is refused, the parent keeps talking.
s, f = connect()
talk(s, f, "second-$MARKER")
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.read(r, 1)  # until the parent has used the connection
    os._exit(0 if refused(lambda: s.sendall(b"child-$MARKER\n")) else 3)
talk(s, f, "parent-$MARKER")
os.write(w, b"x")
assert os.waitpid(pid, 0)[1] == 0, "the child wrote after the parent"
talk(s, f, "parent-again-$MARKER")

# 3. A child that never touches the connection (it runs a program): the parent is unaffected.
pid = os.fork()
if pid == 0:
    os.execv("/bin/true", ["true"])
os.waitpid(pid, 0)
talk(s, f, "parent-after-exec-child-$MARKER")
s.close()

# 4. Threads of the parent write all along while it forks: every child is refused, none of its
#    records goes out under the parent's nonces (a child had taken the parent's threads' claim
#    for its own: hostile finding).
#    The connection's owner is decided once, at its first fork: a first child that leaves it
#    alone, then the parent's talk, make the parent its owner for good. (Had the threads started
#    right away, the first child could use the connection before any of them: it would then own
#    it, by the rule of part 1.) Every later child must be refused however the parent's threads
#    and the child are scheduled.
import threading
s, f = connect()
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
talk(s, f, "threads-$MARKER")
stop = threading.Event()
def writer():
    while not stop.is_set():
        s.sendall(b"y" * 50 + b"\n")
def drain():
    while f.readline():
        pass
threads = [threading.Thread(target=writer, daemon=True) for _ in range(3)]
threading.Thread(target=drain, daemon=True).start()
for t in threads:
    t.start()
refusals = 0
for i in range(20):
    pid = os.fork()
    if pid == 0:
        os._exit(0 if refused(lambda: s.sendall(b"child-%d-$MARKER\n" % i)) else 3)
    refusals += os.waitpid(pid, 0)[1] == 0
stop.set()
for t in threads:
    t.join()
assert refusals == 20, "%d of 20 children wrote on the parent's connection" % (20 - refusals)
print("client ok")
PYEOF
  (env_from client.env timeout -s KILL 30 "$scone" run -- "$PY" client.py) > client.out 2>&1 ||
    { cat client.out server.log; fail "forking client"; }
  grep -q "client ok" client.out || { cat client.out; fail "client"; }
  grep -q "scone: network shield: client rule ECHO: connection .*belongs to process [0-9]*, which used it after a fork" \
    client.out || { cat client.out; fail "no scone: line for the process refused"; }
  ! grep -qi "bad record\|decrypt\|failed" server.log || { cat server.log; fail "the server saw a broken record"; }
  check_wire wire.log
  ;;
passed-descriptors)
  # A shielded descriptor's state lives in its process: passed to another process (SCM_RIGHTS)
  # it would be the bare socket or ciphertext file there. The sender is refused (EPERM and a
  # scone: line). A connected socket that arrives from elsewhere (SCM_RIGHTS, pidfd_getfd) has
  # no TLS state in the receiver: where a rule protects it, it is made unusable, so the marker
  # the receiver writes never reaches the wire.
  port=$(free_port)
  server_env ECHO "$port" "$(cat ca.crt)" > rules.env
  "$PY" -c "
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $port)); s.listen(8)
while True:
    c, _ = s.accept()
    data = b''
    while (d := c.recv(65536)):
        data += d
    open('wire.log', 'ab').write(data + b'|')
    c.close()
" &
  pids+=($!)
  wait_for_port "$port" "$!"
  {
    echo "SCONE_NETWORK_SHIELD_CLIENT_ECHO=protected"
    echo "SCONE_NETWORK_SHIELD_CLIENT_ECHO_DESTINATION=TCP:127.0.0.1:$port"
    echo "SCONE_NETWORK_SHIELD_CLIENT_ECHO_SERVER_AUTH=disabled"
  } > client.env
  "$scone" volume create vol --key-file vkey >/dev/null
  # 1. Sending: a shielded process passes its TLS connection, then a protected file.
  cat > sender.py <<PYEOF
import errno, os, socket
a, b = socket.socketpair()
def refused(fd):
    try:
        socket.send_fds(a, [b"x"], [fd])
    except PermissionError:
        return True
    return False
tls = socket.socket()
tls.setblocking(False)
try:
    tls.connect(("127.0.0.1", $port))
except BlockingIOError:
    pass
assert refused(tls.fileno()), "the TLS connection was passed"
f = open("vol/secret", "w")
f.write("$MARKER in a file")
f.flush()
assert refused(f.fileno()), "the protected file was passed"
plain = open("/dev/null")
assert socket.send_fds(a, [b"x"], [plain.fileno()]) == 1, "an ordinary descriptor"
print("sender ok")
PYEOF
  (env_from client.env timeout -s KILL 20 "$scone" run --volume vol:vkey -- "$PY" sender.py) > sender.out 2>&1 ||
    { cat sender.out; fail "sender"; }
  grep -q "sender ok" sender.out || { cat sender.out; fail "sender"; }
  grep -q "scone: descriptor [0-9]* is a TLS connection of the network shield: .*EPERM" sender.out ||
    { cat sender.out; fail "no scone: line for the TLS connection passed"; }
  grep -q "scone: descriptor [0-9]* is a protected file: .*EPERM" sender.out ||
    { cat sender.out; fail "no scone: line for the protected file passed"; }
  # 2. Receiving: an unshielded process (started here, outside the runtime) connects to the
  #    protected destination and passes the socket to a shielded one (SCM_RIGHTS), which then
  #    also takes it with pidfd_getfd.
  "$PY" -c "
import os, socket
l = socket.socket(socket.AF_UNIX); l.bind('giver.sock'); l.listen(1)
u, _ = l.accept()
s = socket.create_connection(('127.0.0.1', $port))
socket.send_fds(u, [b'%d %d' % (os.getpid(), s.fileno())], [s.fileno()])
u.recv(1)   # until the receiver is done
" &
  giver=$!
  pids+=("$giver")
  for _ in $(seq 1 200); do [[ -S giver.sock ]] && break; sleep 0.05; done
  cat > receiver.py <<PYEOF
import ctypes, errno, os, socket
u = socket.socket(socket.AF_UNIX)
u.connect("giver.sock")
msg, fds, _, _ = socket.recv_fds(u, 64, 1)
their_pid, their_fd = map(int, msg.split())
def unusable(fd):
    try:
        os.write(fd, b"$MARKER from the receiver\n")
    except OSError as e:
        return e.errno in (errno.ENOTCONN, errno.EINVAL, errno.EPIPE)
    return False
assert unusable(fds[0]), "a received connection carried plaintext"
# pidfd_getfd (438): the same connection taken from the other process.
libc = ctypes.CDLL(None, use_errno=True)
taken = libc.syscall(438, os.pidfd_open(their_pid), their_fd, 0)
if taken >= 0:
    assert unusable(taken), "a connection taken with pidfd_getfd carried plaintext"
    print("pidfd_getfd checked")
else:
    print("pidfd_getfd failed: errno", ctypes.get_errno())
u.send(b"x")
print("receiver ok")
PYEOF
  (env_from client.env timeout -s KILL 20 "$scone" run -- "$PY" receiver.py) > receiver.out 2>&1 ||
    { cat receiver.out; fail "receiver"; }
  grep -q "receiver ok" receiver.out || { cat receiver.out; fail "receiver"; }
  grep -q "scone: network shield: descriptor [0-9]* received (SCM_RIGHTS) is a connection (TCP:127.0.0.1:$port) that client rule ECHO covers" \
    receiver.out || { cat receiver.out; fail "no scone: line for the received connection"; }
  grep -q "pidfd_getfd checked" receiver.out || { cat receiver.out; fail "pidfd_getfd"; }
  grep -q "scone: network shield: descriptor [0-9]* taken with pidfd_getfd is a connection" receiver.out ||
    { cat receiver.out; fail "no scone: line for the connection taken with pidfd_getfd"; }
  # 3. Inherited at start: an unshielded parent starts the shielded program with its connected
  #    socket open (pass_fds); the runtime finds it at start.
  cat > inheritor.py <<PYEOF
import os, socket, subprocess, sys
s = socket.create_connection(("127.0.0.1", $port))
env = dict(os.environ)
env.update(l.split("=", 1) for l in open("client.env").read().splitlines() if "=" in l)
r = subprocess.run(["$scone", "run", "--", "$PY", "-c",
    "import errno, os\ntry:\n    os.write(%d, b'$MARKER inherited')\n    print('wrote')\nexcept OSError as e:\n    print('refused', e.errno in (errno.ENOTCONN, errno.EINVAL, errno.EPIPE))" % s.fileno()],
    pass_fds=[s.fileno()], env=env, capture_output=True, text=True)
print(r.stdout.strip(), r.stderr.strip())
PYEOF
  "$PY" inheritor.py > inheritor.out 2>&1
  grep -q "^refused True scone: network shield: descriptor [0-9]* inherited at start is a connection" inheritor.out ||
    { cat inheritor.out; fail "a connection inherited at start carried plaintext"; }
  wait "$giver"
  # The listener records a connection once every copy of it is closed.
  for _ in $(seq 1 200); do grep -q '|' wire.log 2>/dev/null && break; sleep 0.05; done
  grep -q '|' wire.log || fail "the listener never saw the connection end"
  ! grep -q "$MARKER" wire.log 2>/dev/null || fail "plaintext on the wire"
  ;;
blocking-calls)
  # A blocking call on a TLS connection waits in the shield, not in the kernel's recv: it must
  # still honour SO_RCVTIMEO (EAGAIN when it passes) and a handler installed with SA_RESTART
  # (the call goes on after the handler, where without SA_RESTART it fails with EINTR). The
  # server replies only once the client's handler has run (it writes to a FIFO): no timing.
  # ioctl(FIONREAD) counts the plaintext a read returns (the kernel's count is ciphertext).
  port=$(free_port)
  server_env SLOW "$port" disabled > rules.env
  mkfifo ran.fifo
  cat > slow_server.py <<PYEOF
import socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", $port)); l.listen(4)
while True:   # (wait_for_port's probe is a connection too)
    c, _ = l.accept()
    while (req := c.recv(100)):
        if req.startswith(b"ping"):
            c.sendall(b"pong-pong")
        if req.startswith(b"after-handler"):
            open("ran.fifo", "rb").read(1)   # the client's handler has run
            c.sendall(b"reply")
PYEOF
  env_from rules.env "$scone" run -- "$PY" slow_server.py > server.log 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  wait_for_port "$port" "$server_pid"
  cat > calls.c <<'CEOF'
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
static int fifo = -1;
static void handler(int sig) { (void)sig; if (write(fifo, "x", 1) < 0) _exit(9); }
static void arm(int restart) {
  struct sigaction sa; memset(&sa, 0, sizeof(sa));
  sa.sa_handler = handler; sa.sa_flags = restart ? SA_RESTART : 0;
  sigaction(SIGALRM, &sa, NULL);
  struct itimerval t = {{0, 0}, {0, 100000}};
  setitimer(ITIMER_REAL, &t, NULL);
}
int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(s, (struct sockaddr*)&a, sizeof(a)) != 0) { perror("connect"); return 1; }
  char buf[64];
  // 0. FIONREAD: the plaintext waiting, not the ciphertext.
  send(s, "ping", 4, 0);
  struct pollfd p = {s, POLLIN, 0};
  poll(&p, 1, -1);
  int waiting = -1, rest = -1;
  ioctl(s, FIONREAD, &waiting);
  long got = recv(s, buf, 4, 0);
  ioctl(s, FIONREAD, &rest);
  printf("fionread %d %ld %d\n", waiting, got, rest);
  recv(s, buf, sizeof(buf), 0);
  // 1. SO_RCVTIMEO: nothing comes, the read gives up with EAGAIN.
  struct timeval tv = {0, 200000};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  long n = recv(s, buf, sizeof(buf), 0);
  printf("timeout %s\n", n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? "EAGAIN" : "wrong");
  tv.tv_usec = 0;
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  fifo = open("ran.fifo", O_RDWR);  /* O_RDWR: never waits for the reader */
  // 2. SA_RESTART: the handler runs while the read waits; the read goes on and gets the reply.
  send(s, "after-handler", 13, 0);
  arm(1);
  n = recv(s, buf, sizeof(buf), 0);
  printf("restart %s\n", n == 5 && memcmp(buf, "reply", 5) == 0 ? "reply" : strerror(errno));
  close(fifo);
  // 3. Without SA_RESTART: the read fails with EINTR (the reply comes after).
  fifo = open("ran.fifo", O_RDWR);  /* O_RDWR: never waits for the reader */
  send(s, "after-handler", 13, 0);
  arm(0);
  n = recv(s, buf, sizeof(buf), 0);
  printf("no-restart %s\n", n < 0 && errno == EINTR ? "EINTR" : "wrong");
  n = recv(s, buf, sizeof(buf), 0);
  printf("then %s\n", n == 5 ? "reply" : "wrong");
  return 0;
}
CEOF
  gcc -O1 -o calls calls.c
  {
    echo "SCONE_NETWORK_SHIELD_CLIENT_SLOW=protected"
    echo "SCONE_NETWORK_SHIELD_CLIENT_SLOW_DESTINATION=TCP:127.0.0.1:$port"
    echo "SCONE_NETWORK_SHIELD_CLIENT_SLOW_SERVER_AUTH=disabled"
  } > client.env
  out="$(env_from client.env timeout -s KILL 10 "$scone" run -- ./calls "$port" 2>&1)" || true
  [[ "$out" == $'fionread 9 4 5\ntimeout EAGAIN\nrestart reply\nno-restart EINTR\nthen reply' ]] ||
    { cat server.log; echo "$out"; fail "blocking calls on a TLS connection: $(echo $out)"; }
  # A write after shutdown(SHUT_WR) is the kernel's: EPIPE and SIGPIPE (unless MSG_NOSIGNAL),
  # no failure line (before: ECONNRESET and "failed: write: protocol is shutdown").
  cat > shut.py <<PYEOF
import signal, socket, sys
s = socket.create_connection(("127.0.0.1", $port))
s.sendall(b"ping")
assert s.recv(9) == b"pong-pong"
s.shutdown(socket.SHUT_WR)
try:
    s.send(b"x", socket.MSG_NOSIGNAL)
except BrokenPipeError:
    print("EPIPE", flush=True)
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
s.send(b"x")
print("no SIGPIPE")
PYEOF
  rc=0
  out="$(env_from client.env timeout -s KILL 10 "$scone" run -- "$PY" shut.py 2>&1)" || rc=$?
  [[ $rc == 141 && "$out" == EPIPE ]] || fail "a write after SHUT_WR: exit $rc, $out"
  ;;
refusals)
  # refuse rules, a server certified by another CA, and a destination no rule names under
  # SCONE_NETWORK_SHIELD=protected: the program sees a refused connection, a `scone:` line names why.
  port=$(free_port)
  "$PY" -m http.server -b 127.0.0.1 "$port" > plain-http.log 2>&1 &
  pids+=($!)
  wait_for_port "$port" "${pids[-1]}"
  cat > connect.py <<PYEOF
import socket, sys
try:
    socket.create_connection(("127.0.0.1", $port)).close()
except ConnectionRefusedError:
    print("refused")
    sys.exit(0)
print("connected")
PYEOF
  out=$(SCONE_NETWORK_SHIELD_CLIENT_OLD=refuse SCONE_NETWORK_SHIELD_CLIENT_OLD_DESTINATION="TCP:127.0.0.1:$port" \
        "$scone" run -- "$PY" connect.py 2>&1)
  [[ "$out" == *"refused"* ]] || fail "a refuse client rule let the connection through: $out"
  [[ "$out" == *"scone: network shield: connect to TCP:127.0.0.1:$port refused by client rule OLD"* ]] ||
    fail "no scone: line naming the client rule: $out"
  out=$(SCONE_NETWORK_SHIELD=protected "$scone" run -- "$PY" connect.py 2>&1)
  [[ "$out" == *"refused"* && "$out" == *"scone: network shield: connect to TCP:127.0.0.1:$port refused"* ]] ||
    fail "a destination no rule names was not refused under SCONE_NETWORK_SHIELD=protected: $out"
  out=$(SCONE_NETWORK_SHIELD=unprotected "$scone" run -- "$PY" connect.py 2>&1)
  [[ "$out" == "connected" ]] || fail "unprotected: $out"
  out=$(SCONE_NETWORK_SHIELD=unprotected SCONE_NETWORK_SHIELD_UNSUPPORTED_PROTOCOLS=refuse "$scone" run -- "$PY" -c '
import socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    print("udp allowed")
except PermissionError:
    print("udp refused")' 2>&1)
  [[ "$out" == *"udp refused"* && "$out" == *"scone: network shield: a UDP socket refused"* ]] || fail "UDP: $out"
  # Every socket that carries data off the host unprotected (before: packet sockets and SCTP
  # streams were allowed, and could send anything on an interface); unix and netlink stay.
  out=$(SCONE_NETWORK_SHIELD=unprotected SCONE_NETWORK_SHIELD_UNSUPPORTED_PROTOCOLS=refuse "$scone" run -- "$PY" -c '
import socket
for name, args in [("packet", (socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))),
                   ("packet-dgram", (socket.AF_PACKET, socket.SOCK_DGRAM, 0)),
                   ("sctp", (socket.AF_INET, socket.SOCK_STREAM, 132)),
                   ("icmp", (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)),
                   ("unix", (socket.AF_UNIX, socket.SOCK_DGRAM, 0)),
                   ("netlink", (socket.AF_NETLINK, socket.SOCK_RAW, 0)),
                   ("tcp", (socket.AF_INET, socket.SOCK_STREAM, 0))]:
    try:
        socket.socket(*args).close()
        print(name, "allowed")
    except PermissionError:
        print(name, "refused")
    except OSError as e:
        print(name, "unavailable", e.errno)' 2>&1)
  for refused in packet packet-dgram icmp; do [[ "$out" == *"$refused refused"* ]] || fail "$refused: $out"; done
  [[ "$out" != *"sctp allowed"* ]] || fail "sctp: $out"  # refused, or no SCTP in this kernel
  for allowed in unix netlink tcp; do [[ "$out" == *"$allowed allowed"* ]] || fail "$allowed: $out"; done
  [[ "$out" == *"scone: network shield: a packet socket refused"* && "$out" == *"scone: network shield: an ICMP socket refused"* ]] ||
    fail "the refusals' lines: $out"
  # A server that another CA certified: the shielded client refuses it at connect.
  tport=$(free_port)
  server_env FAKE "$tport" disabled impostor.crt impostor.key > impostor.env
  start_http_server "$tport" impostor.env
  sed -i "s/$port/$tport/" connect.py
  out=$(SCONE_NETWORK_SHIELD_CLIENT_API=protected SCONE_NETWORK_SHIELD_CLIENT_API_DESTINATION="TCP:localhost:$tport" \
        SCONE_NETWORK_SHIELD_CLIENT_API_SERVER_AUTH="$(cat ca.crt)" "$scone" run -- "$PY" connect.py 2>&1)
  [[ "$out" == *"refused"* ]] || fail "the client accepted another CA's server: $out"
  [[ "$out" == *"scone: network shield: client rule API: connection with TCP:127.0.0.1:$tport failed: handshake: certificate verification failed"* ]] ||
    fail "no scone: line naming the client rule and the certificate: $out"
  # A server rule that refuses: the connection is closed, the server keeps accepting.
  rport=$(free_port)
  SCONE_NETWORK_SHIELD_SERVER_OLD=refuse SCONE_NETWORK_SHIELD_SERVER_OLD_PORT="TCP:$rport" \
    "$scone" run -- "$PY" -m http.server -b 127.0.0.1 "$rport" > refuse.log 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do grep -q "Serving HTTP" refuse.log && break; sleep 0.05; done
  if curl -sS -m 5 "http://127.0.0.1:$rport/" >/dev/null 2>&1; then fail "a refuse server rule served"; fi
  if curl -sS -m 5 "http://127.0.0.1:$rport/" >/dev/null 2>&1; then fail "a refuse server rule served"; fi
  [[ "$(grep -c "refused by server rule OLD" refuse.log)" == 2 ]] || { cat refuse.log; fail "no scone: line per refused connection"; }
  kill -0 "${pids[-1]}" || fail "the server died"
  ;;

nonblocking-*)
  # Non-blocking sockets on both sides with the readiness calls a selector makes (poll, select,
  # epoll): an echo server that reads 100 bytes at a time (the rest of a record waits, decrypted,
  # in the shield: it must still show as readable) and a client that connects without blocking
  # (the handshake runs while it waits for POLLOUT, then POLLIN).
  selector="${case_name#nonblocking-}"
  port=$(free_port)
  relay=$(free_port)
  cat > echo_server.py <<'PYEOF'
import select, selectors, socket, sys

class EdgeTriggered(selectors.EpollSelector):
    # Registers with EPOLLET: a reader must read until EAGAIN; one that stops early waits for
    # the next edge.
    def register(self, fileobj, events, data=None):
        key = super().register(fileobj, events, data)
        self._selector.modify(key.fd, select.EPOLLIN | select.EPOLLET)
        return key

sel = {"poll": selectors.PollSelector, "select": selectors.SelectSelector, "epoll": selectors.EpollSelector,
       "epoll-et": EdgeTriggered}[sys.argv[1]]()
edge = sys.argv[1] == "epoll-et"
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[2])))
listener.listen(16)
listener.setblocking(False)
sel.register(listener, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj is listener:
            try:
                c, _ = listener.accept()
            except (BlockingIOError, ConnectionAbortedError):
                continue
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ, bytearray())
            continue
        c, buf = key.fileobj, key.data
        data = b""
        try:
            while True:  # edge triggered: until EAGAIN, 100 bytes at a time
                chunk = c.recv(100)
                data += chunk
                if not edge or not chunk:
                    break
        except BlockingIOError:
            if not data:
                continue
        except ConnectionResetError:
            data = b""
        if not data:
            sel.unregister(c)
            c.close()
            continue
        buf += data
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            c.setblocking(True)
            c.sendall(b"echo:" + line + b"\n")
            c.setblocking(False)
            buf[:] = rest
PYEOF
  cat > nb_client.py <<PYEOF
import errno, select, socket, sys
s = socket.socket()
s.setblocking(False)
r = s.connect_ex(("127.0.0.1", $relay))
assert r in (0, errno.EINPROGRESS), r
p = select.poll()
p.register(s, select.POLLOUT)
assert p.poll(10000), "connect never completed"
assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
for i in range(3):
    msg = ("$MARKER-%d-" % i * 200 + "\n").encode()
    sent = 0
    while sent < len(msg):
        try:
            sent += s.send(msg[sent:])
        except BlockingIOError:
            p.modify(s, select.POLLOUT)
            assert p.poll(10000), "never writable"
    got = b""
    p.modify(s, select.POLLIN)
    while not got.endswith(b"\n"):
        assert p.poll(10000), "no reply: %d bytes so far" % len(got)
        try:
            data = s.recv(65536)
        except BlockingIOError:
            continue
        assert data, "end of stream after %d bytes" % len(got)
        got += data
    assert got == b"echo:" + msg, (len(got), len(msg))
# sendfile onto the protected socket (blocking): the file's plaintext goes through the shield.
with open("sendfile.txt", "wb") as f:
    f.write(("$MARKER-sendfile-" * 300 + "\n").encode())
s.setblocking(True)
with open("sendfile.txt", "rb") as f:
    s.sendfile(f)
expected = b"echo:" + open("sendfile.txt", "rb").read()
got = b""
while len(got) < len(expected):
    data = s.recv(65536)
    assert data, "end of stream after %d bytes" % len(got)
    got += data
assert got == expected, (len(got), len(expected))
s.close()
print("client ok")
PYEOF
  server_env ECHO "$port" "$(cat ca.crt)" > server.env
  env_from server.env "$scone" run -- "$PY" echo_server.py "$selector" "$port" > server.log 2>&1 &
  pids+=($!)
  wait_for_port "$port" "${pids[-1]}"
  start_relay "$relay" "$port" wire.log
  client_env ECHO "TCP:localhost:$relay" "IDENTITY=$(cat client.key client.crt)" > client.env
  (env_from client.env timeout -s KILL 30 "$scone" run -- "$PY" nb_client.py) > client.out 2>&1 ||
    { cat client.out server.log; fail "non-blocking client"; }
  grep -q "client ok" client.out || fail "client"
  check_wire wire.log
  ;;

edge-triggered-reads)
  # A reader that takes a short read for "drained" (EPOLLET, as nginx's ngx_unix_recv): a recv
  # returns all that has arrived, up to its count, as the kernel's does. Before, the shield
  # returned one record (16 KiB) of what the kernel held, and such a reader waited for an edge
  # that never came: nginx as a reverse proxy to a protected backend stopped after 48 KB.
  port=$(free_port)
  proxy=$(free_port)
  mkdir -p tmp www
  head -c 3000000 /dev/urandom > www/big.bin
  server_env WEB "$port" disabled > rules.env
  start_http_server "$port" rules.env
  client_env WEB "TCP:127.0.0.1:$port" > client.env
  cat > et_client.py <<PYEOF
import hashlib, select, socket
s = socket.create_connection(("127.0.0.1", $port))
s.sendall(b"GET /big.bin HTTP/1.0\r\n\r\n")
s.setblocking(False)
ep = select.epoll()
ep.register(s.fileno(), select.EPOLLIN | select.EPOLLET)
data = b""
done = False
while not done:
    assert ep.poll(10), "no edge for 10 s after %d bytes" % len(data)
    while True:  # until a short read, as nginx
        try:
            chunk = s.recv(65536)
        except BlockingIOError:
            break
        if not chunk:
            done = True
            break
        data += chunk
        if len(chunk) < 65536:
            break
print(hashlib.sha256(data.partition(b"\r\n\r\n")[2]).hexdigest())
PYEOF
  got=$(env_from client.env timeout -s KILL 60 "$scone" run -- "$PY" et_client.py 2> et.err) || { cat et.err; fail "the edge-triggered reader"; }
  [[ "$got" == "$(sha256sum < www/big.bin | cut -d' ' -f1)" ]] || fail "the edge-triggered reader got other bytes"
  # nginx, unmodified, proxying to the protected backend through a client rule.
  chmod -R a+rX "$work" && chown www-data: tmp
  cat > proxy.conf <<NGINXEOF
daemon off;
master_process on;
worker_processes 2;
user www-data;
pid $work/tmp/nginx.pid;
error_log $work/tmp/error.log notice;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $work/tmp/body;
  proxy_temp_path $work/tmp/proxy;
  fastcgi_temp_path $work/tmp/fastcgi;
  uwsgi_temp_path $work/tmp/uwsgi;
  scgi_temp_path $work/tmp/scgi;
  upstream back { server 127.0.0.1:$port; }
  server { listen 127.0.0.1:$proxy; location / { proxy_pass http://back; } }
}
NGINXEOF
  env_from client.env "$scone" run -- nginx -p "$work/tmp/" -e "$work/tmp/error.log" -c "$work/proxy.conf" > nginx.out 2>&1 &
  pids+=($!)
  wait_for_port "$proxy" "${pids[-1]}"
  for i in 1 2 3; do
    curl -sSf -m 30 "http://127.0.0.1:$proxy/big.bin" -o "proxied.$i" || { cat tmp/error.log; fail "curl through the proxy ($i)"; }
    cmp -s "proxied.$i" www/big.bin || fail "the proxy passed other bytes ($i: $(stat -c %s "proxied.$i") bytes)"
  done
  master=$(cat tmp/nginx.pid)
  pids+=($(pgrep -P "$master"))
  kill -QUIT "$master"
  for _ in $(seq 1 200); do kill -0 "$master" 2>/dev/null || break; sleep 0.05; done
  ;;

unix-paths)
  # Rules for unix sockets name a socket file, however the program spells its path: relative
  # after a chdir, with "./" or "//", through a link. Before, only the rule's exact text matched:
  # a protected server that bound "u.sock" served plaintext, and a `refuse` client rule was passed
  # by with "./w.sock".
  mkdir -p sockets
  server_env U "unix:$work/sockets/u.sock" disabled | sed 's/^SCONE_NETWORK_SHIELD_SERVER_U_PORT=TCP:/SCONE_NETWORK_SHIELD_SERVER_U_PORT=/' > unix.env
  cat > unix_server.py <<PYEOF
import os, socket
os.chdir("$work/sockets")
l = socket.socket(socket.AF_UNIX)
l.bind("u.sock")
os.chdir("/")  # the relative name now names another file
l.listen()
print("listening", flush=True)
while True:
    c, _ = l.accept()
    try:
        c.sendall(b"$MARKER secret\n")
    except OSError:
        pass
    c.close()
PYEOF
  env_from unix.env "$scone" run -- "$PY" unix_server.py > unix_server.log 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do grep -q listening unix_server.log && break; sleep 0.05; done
  grep -q listening unix_server.log || { cat unix_server.log; fail "the unix server did not start"; }
  got=$(timeout -s KILL 10 "$PY" -c "
import socket
s = socket.socket(socket.AF_UNIX)
s.connect('$work/sockets/u.sock')
print(s.recv(100))" 2>&1) || true
  [[ "$got" != *"$MARKER"* ]] || fail "a plain client read the protected server's plaintext: $got"
  # A shielded client with a rule for the same file, spelled otherwise, talks TLS to it.
  ln -s sockets/u.sock ulink.sock
  for spelling in "$work/sockets//./u.sock" "ulink.sock"; do
    got=$(SCONE_NETWORK_SHIELD_CLIENT_U=protected SCONE_NETWORK_SHIELD_CLIENT_U_DESTINATION="unix:$work/sockets/u.sock" \
          SCONE_NETWORK_SHIELD_CLIENT_U_SERVER_AUTH="$(cat ca.crt)" SCONE_NETWORK_SHIELD_CLIENT_U_SERVER_DNS_NAME=localhost \
          timeout -s KILL 10 "$scone" run -- "$PY" -c "
import socket
s = socket.socket(socket.AF_UNIX)
s.connect('$spelling')
print(s.recv(100).decode().strip())" 2>&1) || fail "the shielded client through $spelling: $got"
    [[ "$got" == "$MARKER secret" ]] || fail "the shielded client through $spelling read: $got"
  done
  # A refused destination, spelled otherwise.
  for spelling in "./sockets/u.sock" "$work//sockets/u.sock" "ulink.sock"; do
    got=$(SCONE_NETWORK_SHIELD_CLIENT_R=refuse SCONE_NETWORK_SHIELD_CLIENT_R_DESTINATION="unix:$work/sockets/u.sock" \
          timeout -s KILL 10 "$scone" run -- "$PY" -c "
import socket
s = socket.socket(socket.AF_UNIX)
try:
    s.connect('$spelling')
    print('connected')
except ConnectionRefusedError:
    print('refused')" 2>&1)
    [[ "$got" == *refused* && "$got" != *connected* ]] || fail "the refuse rule through $spelling: $got"
  done
  ;;

nodelay)
  # Nagle and the handshake: a client's first small write must leave at once, as natively (it
  # would wait for the acknowledgement of the handshake's last flight: 40 ms per connection).
  # The shield lends TCP_NODELAY until the first exchange and then gives the program its own
  # setting back; the program sees only its own. The kernel's setting is read from outside.
  port=$(free_port)
  start_shielded_redis "$port" R
  {
    echo "SCONE_NETWORK_SHIELD_CLIENT_R=protected"
    echo "SCONE_NETWORK_SHIELD_CLIENT_R_DESTINATION=TCP:127.0.0.1:$port"
    echo "SCONE_NETWORK_SHIELD_CLIENT_R_SERVER_DNS_NAME=localhost"
    echo "SCONE_NETWORK_SHIELD_CLIENT_R_SERVER_AUTH=$(cat ca.crt)"
  } > client.env
  cat > client.py <<'PYEOF'
import socket, sys
port = int(sys.argv[1])
def stop(name, s):
    print(name, s.fileno(), s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), flush=True)
    sys.stdin.readline()
def ping(s):
    s.sendall(b"PING\r\n")
    assert s.recv(64) == b"+PONG\r\n"
a = socket.create_connection(("127.0.0.1", port))
stop("default-connected", a)
ping(a)
stop("default-answered", a)
b = socket.create_connection(("127.0.0.1", port))
b.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
stop("set-connected", b)
ping(b)
stop("set-answered", b)
# Nagle asked for explicitly: the setting it had, so still lent until the first exchange; a
# one-byte getsockopt sees the program's own byte.
c = socket.create_connection(("127.0.0.1", port))
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) == b"\0"
stop("unset-connected", c)
ping(c)
stop("unset-answered", c)
PYEOF
  (env_from client.env timeout -s KILL 30 "$PY" "$here/tools/kernel_nodelay.py" "$scone" run -- "$PY" client.py "$port") > views.txt 2> views.err ||
    { cat views.txt views.err redis.log; fail "the client failed"; }
  # NAME, the program's view, the kernel's.
  printf '%s\n' "default-connected 0 1" "default-answered 0 0" "set-connected 1 1" "set-answered 1 1" \
    "unset-connected 0 1" "unset-answered 0 0" |
    cmp -s - views.txt || { cat views.txt views.err; fail "TCP_NODELAY not lent for the handshake alone, or the program's own setting not kept"; }
  ;;

cork)
  # TCP_CORK and MSG_MORE: what a corked socket (or a send with MSG_MORE) is given leaves as ONE
  # TLS record (natively: one segment), not a record per write; nginx with `tcp_nopush on` corks
  # a response's headers and its sendfile. A client outside the shield feeds the records to
  # OpenSSL one at a time and prints each record's plaintext size (tools/tls_records.py). The
  # shielded server is python3 with a scenario per connection; tcpdump sees no marker.
  port=$(free_port)
  server_env WEB "$port" disabled > rules.env
  head -c 1000 /dev/zero | tr '\0' 'b' > body.bin
  printf '%s' "$MARKER" | dd of=body.bin conv=notrunc status=none
  cat > cork_server.py <<'PYEOF'
import os, select, socket, sys
port, marker = int(sys.argv[1]), sys.argv[2].encode()
CORK, NODELAY = socket.TCP_CORK, socket.TCP_NODELAY
header = (marker + b" header ").ljust(157, b"h")  # 157 + 1000 bytes: a record of 1157
body = open("body.bin", "rb").read()
srv = socket.socket()
srv.bind(("127.0.0.1", port))
srv.listen()
def cork(c, on):
    c.setsockopt(socket.IPPROTO_TCP, CORK, on)
    assert c.getsockopt(socket.IPPROTO_TCP, CORK) == on  # the program's own setting
while True:
    c, _ = srv.accept()
    f = c.makefile("rb")
    scenario = f.readline().strip().decode()
    ack = f.readline
    if scenario == "cork-sendfile":  # headers, then the file with sendfile, then uncork
        cork(c, 1)
        c.sendall(header)
        with open("body.bin", "rb") as b:
            assert os.sendfile(c.fileno(), b.fileno(), 0, len(body)) == len(body)
        cork(c, 0)
        ack()
    elif scenario == "msg-more":  # send with MSG_MORE, then sendmsg without
        assert c.send(header, socket.MSG_MORE) == len(header)
        assert c.sendmsg([body[:500], body[500:]]) == len(body)
        ack()
    elif scenario == "large":  # 40 writes of 1000 bytes corked: full records as they fill
        cork(c, 1)
        for i in range(40):
            c.sendall(bytes([65 + i % 26]) * 1000)
        cork(c, 0)
        ack()
    elif scenario == "nodelay":  # TCP_NODELAY pushes what is corked (tcp(7))
        cork(c, 1)
        c.sendall(header)
        c.setsockopt(socket.IPPROTO_TCP, NODELAY, 1)
        c.sendall(body)
        cork(c, 0)
        ack()
    elif scenario == "close-corked":  # never uncorked: close sends it
        cork(c, 1)
        c.sendall(header)
        c.sendall(body)
    elif scenario == "shutdown-corked":
        cork(c, 1)
        c.sendall(header + body)
        c.shutdown(socket.SHUT_WR)
        ack()
    elif scenario == "wait-corked":  # corked, waits for the answer: sealed at the read's wait
        cork(c, 1)
        c.sendall(header)
        c.sendall(body)
        ack()
    elif scenario == "epoll-corked":  # corked, waits in epoll: sealed at the wait
        cork(c, 1)
        c.sendall(header + body)
        c.setblocking(False)
        e = select.epoll()
        e.register(c.fileno(), select.EPOLLIN)
        assert e.poll()
        c.setblocking(True)
        ack()
    elif scenario == "nonblocking-corked":  # EAGAIN and EPOLLOUT while corked: all of it, in order
        cork(c, 1)
        c.setblocking(False)
        e = select.epoll()
        e.register(c.fileno(), select.EPOLLOUT)
        data, sent = bytes(i % 251 for i in range(2000000)), 0
        while sent < len(data):
            try:
                sent += c.send(data[sent:sent + 10000])
            except BlockingIOError:
                e.poll()
        cork(c, 0)  # what the kernel does not take now leaves at the next call or wait
        e.modify(c.fileno(), select.EPOLLIN)
        e.poll()
        c.setblocking(True)
        ack()
    elif scenario == "exit-corked":  # corked, the process exits without closing
        cork(c, 1)
        c.sendall(header + body)
        os._exit(0)
    f.close()
    c.close()
PYEOF
  env_from rules.env "$scone" run -- "$PY" cork_server.py "$port" "$MARKER" > server.log 2>&1 &
  pids+=($!)
  wait_for_port "$port" "${pids[-1]}"
  start_capture wire.pcap "$port"
  # records SCENARIO SIZE EXPECTED: the records that carried the data, and the data itself.
  records() {
    local got
    got=$(timeout -s KILL 30 "$PY" "$here/tools/tls_records.py" "$port" ca.crt "$MARKER" line "$1" "$2" 2>&1) ||
      { cat server.log; fail "$1: client failed: $got"; }
    [[ "$got" == "$3" ]] || { cat server.log; fail "$1: records of $got bytes, expected $3"; }
    [[ "$(head -c "$2" records.out | wc -c)" == "$2" ]] || fail "$1: not all data arrived"
  }
  { "$PY" -c "import sys; sys.stdout.buffer.write((sys.argv[1].encode() + b' header ').ljust(157, b'h'))" "$MARKER"
    cat body.bin; } > expected.bin
  records cork-sendfile 1157 1157
  cmp -s records.out expected.bin || fail "cork-sendfile: wrong data"
  records msg-more 1157 1157
  records large 40000 "16384 16384 7232"
  records nodelay 1157 "157 1000"
  records close-corked 1157 1157
  records shutdown-corked 1157 1157
  records wait-corked 1157 1157
  records epoll-corked 1157 1157
  got=$(timeout -s KILL 60 "$PY" "$here/tools/tls_records.py" "$port" ca.crt "$MARKER" line nonblocking-corked 2000000 2>&1) ||
    { cat server.log; fail "nonblocking-corked: client failed: $got"; }
  "$PY" -c "import sys; sys.stdout.buffer.write(bytes(i % 251 for i in range(2000000)))" | cmp -s - records.out ||
    fail "nonblocking-corked: the data arrived wrong"
  records exit-corked 1157 1157
  stop_capture wire.pcap
  check_capture wire.pcap "$MARKER"
  # nginx with Debian's `tcp_nopush on`: each response (headers, then a 1 KiB file by sendfile)
  # is one record, on a keep-alive connection's first request and its later ones.
  nginx_port=$(free_port)
  mkdir -p tmp www
  { echo "$MARKER"; head -c 2000 /dev/zero | tr '\0' 'x'; } | head -c 1024 > www/1k.bin
  chmod -R a+rX "$work" && chown www-data: tmp
  nginx_config "$work" "user www-data;" off "127.0.0.1:$nginx_port" "$work/www" | sed 's/sendfile on;/sendfile on; tcp_nopush on;/' > nginx.conf
  server_env WEB "$nginx_port" disabled > nginx.env
  env_from nginx.env "$scone" run -- nginx -p "$work/tmp/" -e "$work/tmp/error.log" -c "$work/nginx.conf" > nginx.out 2>&1 &
  pids+=($!)
  wait_for_port "$nginx_port" "${pids[-1]}"
  got=$(timeout -s KILL 30 "$PY" "$here/tools/tls_records.py" "$nginx_port" ca.crt "$MARKER" http /1k.bin 3 2>&1) ||
    { cat tmp/error.log; fail "nginx: client failed: $got"; }
  [[ "$(wc -l <<<"$got")" == 3 && "$(tr -d '\n0-9' <<<"$got")" == "" ]] ||
    { cat tmp/error.log; fail "nginx with tcp_nopush: a response in several records: $got"; }
  grep -c "$MARKER" records.out | grep -qx 3 || fail "nginx: the file did not arrive three times"
  master=$(cat tmp/nginx.pid)
  pids+=($(pgrep -P "$master"))
  kill -QUIT "$master"
  ;;

redis)
  # redis-server (epoll), unmodified and without TLS in its configuration, behind a server rule:
  # redis-cli --tls and redis-benchmark --tls (50 connections at once) through the relay;
  # plaintext redis-cli is refused with a `scone:` line.
  port=$(free_port)
  relay=$(free_port)
  start_shielded_redis "$port" REDIS
  start_relay "$relay" "$port" wire.log
  start_capture wire.pcap "$port" "$relay"
  cli() { timeout -s KILL 20 redis-cli --tls --cacert ca.crt -h localhost -p "$relay" "$@"; }
  [[ "$(cli SET key "$MARKER-value")" == "OK" ]] || { cat redis.log; fail "SET over TLS"; }
  [[ "$(cli GET key)" == "$MARKER-value" ]] || fail "GET over TLS"
  for i in $(seq 1 200); do echo "SET key:$i $MARKER-$i"; done | cli > /dev/null || fail "pipelined SETs"
  [[ "$(cli GET key:200)" == "$MARKER-200" ]] || fail "pipelined value"
  stop_capture wire.pcap  # what carried the marker (redis-benchmark's values do not)
  check_capture wire.pcap "$MARKER"
  timeout -s KILL 60 redis-benchmark --tls --cacert ca.crt -h localhost -p "$relay" -t set,get -n 5000 -c 50 -q \
    > bench.out 2>&1 || { cat bench.out; fail "redis-benchmark --tls"; }
  grep -q "GET: .* requests per second" bench.out || { cat bench.out; fail "redis-benchmark"; }
  check_wire wire.log
  [[ "$(timeout -s KILL 10 redis-cli -h 127.0.0.1 -p "$port" PING 2>&1)" != "PONG" ]] || fail "plaintext PING answered"
  grep -q "scone: network shield: server rule REDIS: connection with 127.0.0.1:[0-9]* failed: handshake" redis.log ||
    { cat redis.log; fail "no scone: line for plaintext"; }
  [[ "$(cli GET key)" == "$MARKER-value" ]] || fail "the server stopped serving"
  # redis-cli unmodified under the shield, TLS from a client rule: hiredis connects without
  # blocking and calls connect again once it completed (before, the shield began a second
  # handshake down the live connection: "Connection reset by peer").
  client_env REDIS "TCP:127.0.0.1:$port" > client.env
  [[ "$(env_from client.env timeout -s KILL 20 "$scone" run -- redis-cli -p "$port" GET key 2>&1)" == "$MARKER-value" ]] ||
    fail "shielded redis-cli"
  # A refused connect to a protected destination reports its error, as natively: POLLERR with
  # ECONNREFUSED from SO_ERROR, asyncio's ConnectionRefusedError (before: POLLHUP alone and no
  # error, the handshake had taken it; asyncio reported a lost connection, redis-cli an abort).
  closed=$(free_port)
  client_env CLOSED "TCP:127.0.0.1:$closed" > closed.env
  cat > refused.py <<PYEOF
import asyncio, errno, select, socket
s = socket.socket()
s.setblocking(False)
assert s.connect_ex(("127.0.0.1", $closed)) == errno.EINPROGRESS
p = select.poll()
p.register(s, select.POLLOUT)
events = p.poll(10000)
assert events and events[0][1] & select.POLLERR, events
assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
async def connect():
    try:
        await asyncio.open_connection("127.0.0.1", $closed)
    except ConnectionRefusedError:
        return "refused"
print(asyncio.run(connect()))
PYEOF
  out=$(env_from closed.env timeout -s KILL 20 "$scone" run -- "$PY" refused.py 2>&1) || { echo "$out"; fail "a refused connect"; }
  [[ "$out" == refused ]] || fail "asyncio's connect to a closed port: $out"
  ;;

nginx)
  # nginx, master and two workers as www-data (they accept on the socket the master opened),
  # epoll and sendfile, no ssl in its configuration: curl --cacert with 4 keep-alive clients and
  # a 1 MiB file through the relay; plaintext refused with a `scone:` line in its error log.
  port=$(free_port)
  relay=$(free_port)
  mkdir -p tmp www
  echo "$MARKER index" > www/index.html
  head -c 1048576 /dev/urandom > www/big.bin
  chmod -R a+rX "$work" && chown www-data: tmp
  nginx_config "$work" "user www-data;" off "127.0.0.1:$port" "$work/www" > nginx.conf
  server_env WEB "$port" disabled > nginx.env
  env_from nginx.env "$scone" run -- nginx -p "$work/tmp/" -e "$work/tmp/error.log" -c "$work/nginx.conf" > nginx.out 2>&1 &
  pids+=($!)
  wait_for_port "$port" "${pids[-1]}"
  start_relay "$relay" "$port" wire.log
  start_capture wire.pcap "$port" "$relay"
  for c in 1 2 3 4; do
    curl -sSf --cacert ca.crt "https://localhost:$relay/index.html?c=$c&n=[1-100]" > "body.$c" &
  done
  for c in 1 2 3 4; do wait -n || { cat tmp/error.log; fail "curl over TLS"; }; done
  expected="$(for i in $(seq 1 100); do cat www/index.html; done)"
  for c in 1 2 3 4; do [[ "$(cat "body.$c")" == "$expected" ]] || fail "client $c got wrong content"; done
  curl -sSf --cacert ca.crt "https://localhost:$relay/big.bin" | cmp - www/big.bin || fail "big.bin (sendfile) served wrong"
  check_wire wire.log
  stop_capture wire.pcap
  check_capture wire.pcap "$MARKER"
  if curl -sS -m 5 "http://127.0.0.1:$port/index.html" > plain.out 2>&1; then fail "plaintext HTTP was served"; fi
  for _ in $(seq 1 100); do grep -q "scone: network shield: server rule WEB" tmp/error.log && break; sleep 0.05; done
  grep -q "scone: network shield: server rule WEB: connection with 127.0.0.1:[0-9]* failed: handshake" tmp/error.log ||
    { cat tmp/error.log nginx.out; fail "no scone: line for plaintext"; }
  [[ "$(pgrep -c -P "$(cat tmp/nginx.pid)")" == 2 ]] || fail "nginx lost a worker"
  curl -sSf --cacert ca.crt "https://localhost:$port/index.html" > after || fail "the server stopped serving"
  master=$(cat tmp/nginx.pid)
  pids+=($(pgrep -P "$master"))  # the workers too, should the graceful stop not end them
  kill -QUIT "$master"
  for _ in $(seq 1 200); do kill -0 "$master" 2>/dev/null || break; sleep 0.05; done
  ;;

memcached)
  # memcached (libevent, epoll), unmodified and without TLS, behind a server rule; a shielded
  # python3 client (a client rule, mutual TLS) speaks memcached's text protocol through the
  # relay: set, get, a value larger than one TLS record, stats. The wire (relay log and tcpdump)
  # carries no marker; a plaintext client is refused with a `scone:` line.
  port=$(free_port)
  relay=$(free_port)
  server_env CACHE "$port" "$(cat ca.crt)" > memcached.env
  env_from memcached.env "$scone" run -- memcached -u root -l 127.0.0.1 -p "$port" -U 0 -m 64 -v \
    > memcached.log 2>&1 &
  pids+=($!)
  wait_for_port "$port" "${pids[-1]}"
  start_relay "$relay" "$port" wire.log
  start_capture wire.pcap "$port" "$relay"
  client_env CACHE "TCP:127.0.0.1:$relay" SERVER_DNS_NAME=localhost "IDENTITY=$(cat client.key client.crt)" > client.env
  cat > mc_client.py <<PYEOF
import socket
s = socket.create_connection(("127.0.0.1", $relay))
f = s.makefile("rb")
def command(line, data=None):
    s.sendall(line.encode() + b"\r\n" + (data + b"\r\n" if data is not None else b""))
def value(key):
    command("get " + key)
    header = f.readline().split()
    if header == [b"END"]:
        return None
    assert header[0] == b"VALUE" and header[1] == key.encode(), header
    data = f.read(int(header[3]) + 2)[:-2]
    assert f.readline() == b"END\r\n"
    return data
small = b"$MARKER small value"
big = b"$MARKER big " * 5000  # over 100 kB: many TLS records
for key, data in (("small", small), ("big", big)):
    command("set %s 0 0 %d" % (key, len(data)), data)
    assert f.readline() == b"STORED\r\n"
assert value("small") == small
assert value("big") == big
assert value("absent") is None
command("stats")
stats = {}
while True:
    line = f.readline()
    if line == b"END\r\n":
        break
    _, name, v = line.decode().split()
    stats[name] = v
assert int(stats["cmd_set"]) >= 2 and int(stats["get_hits"]) >= 2, stats
print("client ok", stats["curr_items"])
PYEOF
  (env_from client.env timeout -s KILL 20 "$scone" run -- "$PY" mc_client.py) > client.out 2>&1 ||
    { cat client.out memcached.log; fail "shielded memcached client"; }
  grep -q "client ok 2" client.out || { cat client.out; fail "client"; }
  check_wire wire.log
  stop_capture wire.pcap
  check_capture wire.pcap "$MARKER"
  # Plaintext on the protected port: no reply, a `scone:` line naming the rule.
  reply=$("$PY" -c "
import socket
s = socket.create_connection(('127.0.0.1', $port), timeout=10)
s.sendall(b'get small\r\n')
print(s.recv(4096))" 2>&1)
  [[ "$reply" == "b''" ]] || fail "plaintext client got: $reply"
  for _ in $(seq 1 100); do grep -q "scone: network shield: server rule CACHE" memcached.log && break; sleep 0.05; done
  grep -q "scone: network shield: server rule CACHE: connection with 127.0.0.1:[0-9]* failed: handshake" memcached.log ||
    { cat memcached.log; fail "no scone: line for plaintext"; }
  (env_from client.env timeout -s KILL 20 "$scone" run -- "$PY" mc_client.py) > client2.out 2>&1 ||
    { cat client2.out memcached.log; fail "memcached stopped serving"; }
  ;;

many-connections)
  # 2000 TLS connections at once to redis-server behind a server rule (every handshake in
  # progress holds an ephemeral key in the runtime's secure heap: they must all fit).
  ulimit -n 8192
  port=$(free_port)
  server_env REDIS "$port" disabled > redis.env
  env_from redis.env "$scone" run -- redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --maxclients 5000 > redis.log 2>&1 &
  pids+=($!)
  wait_for_port "$port" "${pids[-1]}"
  timeout -s KILL 240 redis-benchmark --tls --cacert ca.crt -h localhost -p "$port" -t get -n 6000 -c 2000 -q \
    > bench.out 2>&1 || { tail -c 2000 bench.out; fail "redis-benchmark --tls with 2000 connections"; }
  grep -q "GET: .* requests per second" bench.out || { tail -c 2000 bench.out; fail "redis-benchmark"; }
  ! grep -q "scone:" redis.log || { grep -m 5 "scone:" redis.log; fail "connections failed"; }
  ;;

threads-fork)
  # A threaded HTTPS server whose handlers fork a child that writes a protected file, and run a
  # program (subprocess), while other threads handshake, read and write TLS: a lock of OpenSSL's
  # (its secure heap's, its DRBG's: every handshake takes them) that another thread held at a
  # fork stayed held in the child, which waited for good at its first key (fork_gate.h). 200
  # requests, 8 at a time; a hang fails (timeouts), never blocks the suite.
  port=$(free_port)
  server_env WEB "$port" disabled > rules.env
  "$scone" volume create vol --key-file key > /dev/null 2>&1
  mkdir -p www && echo "$MARKER file content" > www/index.html
  cat > forking_server.py <<'PYEOF'
import http.server, os, subprocess, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        n = self.path.rsplit("=", 1)[-1]
        pid = os.fork()
        if pid == 0:
            with open("vol/request-%s.txt" % n, "w") as f:
                f.write("request %s\n" % n)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        out = subprocess.run(["/bin/echo", "child"], capture_output=True, check=True, timeout=60).stdout
        body = open("www/index.html", "rb").read() + out + (b"wrote\n" if status == 0 else b"failed\n")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
PYEOF
  env_from rules.env "$scone" run --volume "$work/vol:$work/key" -- "$PY" forking_server.py "$port" > server.log 2>&1 &
  pids+=($!)
  wait_for_port "$port" "${pids[-1]}"
  start_capture wire.pcap "$port"
  seq 200 | timeout -s KILL 300 xargs -P 8 -I{} curl -sS -m 60 --cacert ca.crt -o "body.{}" \
    "https://localhost:$port/index.html?n={}" 2> curl.log || { tail curl.log server.log; fail "requests to a forking threaded server"; }
  for i in $(seq 200); do
    [[ "$(cat "body.$i")" == "$MARKER file content"$'\n'"child"$'\n'"wrote" ]] || fail "body $i: $(head -c 200 "body.$i")"
  done
  "$scone" run --volume "$work/vol:$work/key" -- "$PY" -c "
for i in range(1, 201):
    assert open('vol/request-%d.txt' % i).read() == 'request %d\\n' % i, i" || fail "the children's files"
  stop_capture wire.pcap
  check_capture wire.pcap "$MARKER"
  ! grep -rq "request 1" vol || fail "plaintext in the volume"
  "$scone" volume verify vol --key-file key > /dev/null || fail "verify"
  ;;

failure-lines)
  # A flood of bad clients (plaintext on a protected port, as a scanner or a misconfigured client
  # sends): the server's `scone:` lines are rate-limited per rule, the rest counted and said with
  # the rule's next line; a failure after the handshake is named by what failed ("read:"), not
  # "handshake:".
  port=$(free_port)
  server_env WEB "$port" disabled > rules.env
  start_http_server "$port" rules.env
  cat > bad_clients.py <<'PYEOF'
import os, re, socket, ssl, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
def plaintext_client():
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        s.recv(100)  # until the server closes: its failure is logged by then
# First (its line is not held back): a client that completes the handshake, then sends a record that does not decrypt.
ctx = ssl.create_default_context(cafile="ca.crt")
with socket.create_connection(("127.0.0.1", port)) as raw:
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    with socket.socket(fileno=os.dup(tls.fileno())) as same:
        same.sendall(b"\x17\x03\x03\x00\x15" + b"x" * 21)
        try:
            tls.recv(100)  # until the server gives up on the connection
        except (ssl.SSLError, OSError):
            pass
start = time.monotonic()
for _ in range(count):
    plaintext_client()
# A held-back count goes out with the rule's next line in a later second: more bad clients, one
# at a time, until the server's log accounts for every failed handshake of the flood (bounded).
def accounted():
    log = open(sys.argv[3], errors="replace").read()
    lines = len(re.findall(r"server rule WEB: connection with \S+ failed: handshake: ", log))
    held = sum(int(n) for n in re.findall(r"server rule WEB: (\d+) more failed connection", log))
    return lines + held
extra = 0
while accounted() < count + extra:
    if time.monotonic() - start > 30:
        sys.exit("the flood's failures are not accounted for within 30 s: %d of %d" % (accounted(), count + extra))
    plaintext_client()
    extra += 1
print("done", extra, flush=True)
PYEOF
  flood=200
  timeout 60 "$PY" bad_clients.py "$port" "$flood" http.log > clients.out 2>&1 || { cat clients.out; fail "the clients failed"; }
  # The server logs the last failure once it read the client's bytes: poll its log, bounded.
  for ((i = 0; i < 500; i++)); do grep -q "failed: read: " http.log && break; sleep 0.01; done
  grep -q "scone: network shield: server rule WEB: connection with 127.0.0.1:[0-9]* failed: read: " http.log ||
    { cat http.log; fail "a failure after the handshake is not named by the read"; }
  lines=$(grep -c "scone: network shield: server rule WEB: connection with .* failed: handshake: " http.log || true)
  [[ "$lines" -ge 1 ]] || { cat http.log; fail "no line for the failed handshakes"; }
  grep -q "scone: network shield: server rule WEB: [0-9]* more failed connection(s) not logged" http.log ||
    { cat http.log; fail "no count of the lines held back"; }
  held=$(grep -o "server rule WEB: [0-9]* more failed" http.log | awk '{s += $4} END {print s + 0}')
  # Every failed handshake is a line or counted (the clients waited for it), and far fewer lines
  # than clients.
  [[ "$lines" -lt $((flood / 2)) ]] || fail "$lines lines for $flood failed handshakes: not rate-limited"
  [[ "$held" -gt $((flood / 2)) ]] || fail "only $held failed handshakes counted"
  ;;

bad-config)
  # A malformed rule: the program does not start, a `scone:` line names the variable.
  expect_refused() {
    local variable="$1"
    shift
    if env "$@" "$scone" run -- /bin/echo started > out 2>&1; then fail "started with $*"; fi
    ! grep -q started out || fail "the program ran with $*"
    grep -q "^scone: $variable: " out || { cat out; fail "no scone: line naming $variable"; }
  }
  expect_refused SCONE_NETWORK_SHIELD SCONE_NETWORK_SHIELD=yes
  expect_refused SCONE_NETWORK_SHIELD_SERVER_A_PORT SCONE_NETWORK_SHIELD_SERVER_A=unprotected SCONE_NETWORK_SHIELD_SERVER_A_PORT=TCP:eighty
  expect_refused SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY SCONE_NETWORK_SHIELD_SERVER_A=protected \
    SCONE_NETWORK_SHIELD_SERVER_A_PORT=TCP:1 SCONE_NETWORK_SHIELD_SERVER_A_CLIENT_AUTH=disabled \
    "SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY=$(cat server.key)"
  expect_refused SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY SCONE_NETWORK_SHIELD_SERVER_A=protected \
    SCONE_NETWORK_SHIELD_SERVER_A_PORT=TCP:1 SCONE_NETWORK_SHIELD_SERVER_A_CLIENT_AUTH=disabled \
    "SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY=$(cat client.key server.crt)"
  expect_refused SCONE_NETWORK_SHIELD_CLIENT_B_SERVER_AUTH SCONE_NETWORK_SHIELD_CLIENT_B=protected \
    SCONE_NETWORK_SHIELD_CLIENT_B_DESTINATION=TCP:localhost:1 SCONE_NETWORK_SHIELD_CLIENT_B_SERVER_AUTH=notapem
  expect_refused SCONE_NETWORK_SHIELD_UNKNOWN SCONE_NETWORK_SHIELD_UNKNOWN=1
  ! grep -q "PRIVATE KEY\|BEGIN" out || fail "a key or certificate was echoed"
  # Values are SCONE's lowercase words, exactly (docs/network-shield.md).
  expect_refused SCONE_NETWORK_SHIELD SCONE_NETWORK_SHIELD=Protected
  grep -q "values are lowercase" out || fail "no hint at the case"
  # A CA followed by junk, a unix path with a newline.
  expect_refused SCONE_NETWORK_SHIELD_CLIENT_B_SERVER_AUTH SCONE_NETWORK_SHIELD_CLIENT_B=protected \
    SCONE_NETWORK_SHIELD_CLIENT_B_DESTINATION=TCP:localhost:1 "SCONE_NETWORK_SHIELD_CLIENT_B_SERVER_AUTH=$(cat ca.crt)junk"
  grep -q "text that is not PEM after PEM block 1" out || { cat out; fail "junk after a certificate was not named as such"; }
  expect_refused SCONE_NETWORK_SHIELD_SERVER_A_PORT SCONE_NETWORK_SHIELD_SERVER_A=unprotected \
    "SCONE_NETWORK_SHIELD_SERVER_A_PORT=unix:/tmp/a"$'\n'"b.sock"
  # A destination that does not resolve could never match: refused (by the runtime, at start-up)
  # unless its addresses are given.
  unresolvable=(SCONE_NETWORK_SHIELD_CLIENT_B=unprotected SCONE_NETWORK_SHIELD_CLIENT_B_DESTINATION=TCP:no-such-host.invalid:80)
  expect_refused SCONE_NETWORK_SHIELD_CLIENT_B_DESTINATION "${unresolvable[@]}"
  grep -q "does not resolve" out || fail "no reason for the unresolvable host"
  [[ "$(env "${unresolvable[@]}" SCONE_NETWORK_SHIELD_CLIENT_B_DESTINATION_IP=192.0.2.1 "$scone" run -- /bin/echo started 2>&1)" == started ]] ||
    fail "an unresolvable host with _DESTINATION_IP did not start"
  # Two client rules for one destination (by address, whatever names it): before, the first by
  # name won silently, an `unprotected` A over a `protected` B, and the connection was plaintext.
  expect_refused SCONE_NETWORK_SHIELD_CLIENT_B_DESTINATION SCONE_NETWORK_SHIELD_CLIENT_A=unprotected \
    SCONE_NETWORK_SHIELD_CLIENT_A_DESTINATION=TCP:127.0.0.1:18451 SCONE_NETWORK_SHIELD_CLIENT_B=protected \
    SCONE_NETWORK_SHIELD_CLIENT_B_DESTINATION=TCP:localhost:18451 "SCONE_NETWORK_SHIELD_CLIENT_B_SERVER_AUTH=$(cat ca.crt)"
  grep -q "is also rule A's destination (127.0.0.1)" out || { cat out; fail "no reason for the second rule"; }
  # So for one socket file by two spellings (a link to its directory, "./").
  mkdir -p sockdir && ln -sfn sockdir socklink
  expect_refused SCONE_NETWORK_SHIELD_CLIENT_B_DESTINATION SCONE_NETWORK_SHIELD_CLIENT_A=unprotected \
    "SCONE_NETWORK_SHIELD_CLIENT_A_DESTINATION=unix:$PWD/sockdir/db.sock" SCONE_NETWORK_SHIELD_CLIENT_B=unprotected \
    "SCONE_NETWORK_SHIELD_CLIENT_B_DESTINATION=unix:$PWD/socklink/./db.sock"
  grep -q "is also rule A's destination ($PWD/sockdir/db.sock)" out || { cat out; fail "no reason for the second unix rule"; }
  [[ "$(env SCONE_NETWORK_SHIELD_CLIENT_A=unprotected SCONE_NETWORK_SHIELD_CLIENT_A_DESTINATION=TCP:127.0.0.1:18451 \
        SCONE_NETWORK_SHIELD_CLIENT_B=unprotected SCONE_NETWORK_SHIELD_CLIENT_B_DESTINATION=TCP:127.0.0.1:18452 \
        "$scone" run -- /bin/echo started 2>&1)" == started ]] || fail "two rules for two ports did not start"
  ;;

*)
  fail "unknown case $case_name"
  ;;
esac
echo "PASS $case_name"
