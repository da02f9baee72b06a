# Shared helpers for the shell tests (sourced).

# fail MESSAGE: report and stop the test.
fail() { echo "FAIL${case_name:+ ($case_name)}: $*" >&2; exit 1; }

# kill_tree PID...: SIGKILL to the processes and everything they started (a test's cleanup: a
# forked child left behind keeps ctest's output pipe open, and ctest waits for it).
kill_tree() {
  local pid all=()
  collect() { local p; all+=("$1"); for p in $(pgrep -P "$1" 2>/dev/null); do collect "$p"; done; }
  for pid in "$@"; do collect "$pid"; done
  ((${#all[@]} == 0)) || kill -9 "${all[@]}" 2>/dev/null || true
}

# wait_for_line FILE PATTERN PID: until FILE has a line matching PATTERN, while PID lives
# (bounded: 30 s, for a loaded machine). Servers print such a line once they listen.
wait_for_line() {
  local file="$1" pattern="$2" pid="$3"
  for _ in $(seq 1 600); do
    grep -q -- "$pattern" "$file" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || fail "process $pid exited before printing '$pattern'"
    sleep 0.05
  done
  fail "no '$pattern' in $file"
}

# start_capture FILE PORT...: tcpdump on the loopback, TCP on the PORTs, into FILE (pcap).
# Returns once tcpdump says it is listening (its filter is then in place); its pid is in
# capture_pid. stop_capture FILE ends it with SIGINT (it writes what it buffered), waits for it
# and fails if the kernel dropped packets.
# check_capture FILE MARKER: no MARKER in any TCP stream of FILE, every stream TLS, at least one.
start_capture() {
  local file="$1" filter="" p
  shift
  for p in "$@"; do filter+="${filter:+ or }tcp port $p"; done
  command -v tcpdump >/dev/null || fail "tcpdump is not installed"
  # --immediate-mode: each packet is handed over as it comes (else libpcap holds a block until a
  # timeout, and packets still in it when tcpdump stops are lost). Its ring has a slot of the
  # snapshot length per packet: -s fits the loopback's largest packet (MTU 65536 + 14), -B 64 MiB
  # makes about a thousand slots, so a burst loses nothing while tcpdump writes.
  tcpdump -i lo -n -U --immediate-mode -s 65552 -B 65536 -Z root -w "$file" "$filter" 2> "$file.log" &
  capture_pid=$!
  wait_for_line "$file.log" "listening on" "$capture_pid"
}
stop_capture() {
  kill -INT "$capture_pid"
  wait "$capture_pid" || fail "tcpdump: $(cat "$1.log" 2>/dev/null)"
  capture_pid=""  # ended: its number may be another process's by the test's cleanup
  # A capture that lost packets proves nothing about them.
  grep -q "^0 packets dropped by kernel" "$1.log" || fail "tcpdump lost packets: $(cat "$1.log")"
}
check_capture() {
  python3 "$(dirname "${BASH_SOURCE[0]}")/capture_check.py" "$1" "$2" || fail "capture $1"
}

# nginx_config DIR USER_LINE ACCESS_LOG LISTEN ROOT: an nginx.conf for the tests, on stdout: a
# master and two workers in the foreground, the pid, the error log and every temporary path
# under DIR/tmp (nginx's defaults lie in /var/lib/nginx, which a test must not touch).
# USER_LINE: "user www-data;" or ""; ACCESS_LOG: "off" or "FILE [FORMAT]" (format withpid:
# "$pid $request_uri $status $body_bytes_sent").
nginx_config() {
  cat <<NGINXEOF
daemon off;
master_process on;
worker_processes 2;
$2
pid $1/tmp/nginx.pid;
error_log $1/tmp/error.log notice;
events { worker_connections 256; }
http {
  log_format withpid '\$pid \$request_uri \$status \$body_bytes_sent';
  access_log $3;
  sendfile on;
  client_body_temp_path $1/tmp/body;
  proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fastcgi;
  uwsgi_temp_path $1/tmp/uwsgi;
  scgi_temp_path $1/tmp/scgi;
  types { text/html html; application/octet-stream bin; }
  server { listen $4; root $5; }
}
NGINXEOF
}

# free_port: a port free now, below the kernel's ephemeral range (32768 and up), so that the
# outgoing connections of tests running alongside do not take it before its server binds it.
# Each port is handed out once while the test that took it runs (a reservation directory named
# by the port, holding the test's pid): two calls of one test (a server's port and its relay's)
# or of two tests running side by side never get the same port before either binds it.
free_port() {
  python3 -c '
import os, random, socket, sys
owner = sys.argv[1]
reservations = "/tmp/scone-test-ports"
os.makedirs(reservations, exist_ok=True)
def reserve(port):
    path = os.path.join(reservations, str(port))
    try:
        os.mkdir(path)
    except FileExistsError:
        try:
            holder = int(open(os.path.join(path, "pid")).read())
        except (OSError, ValueError):
            return False  # being reserved right now
        try:
            os.kill(holder, 0)
            return False  # its test still runs
        except ProcessLookupError:
            pass  # a test that ended: the port is free to hand out again
        except OSError:
            return False
    with open(os.path.join(path, "pid"), "w") as f:
        f.write(owner)
    return True
for _ in range(1000):
    port = random.randint(20000, 32767)
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    if reserve(port):
        print(port)
        break
' "$$"
}
# port_listening PORT PID: status 0 once something listens on 127.0.0.1:PORT (bounded: 30 s),
# 1 if PID exits first or time runs out.
port_listening() {
  for _ in $(seq 1 600); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), timeout=1).close()" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
