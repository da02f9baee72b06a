#!/usr/bin/env bash
# A stack on Docker Swarm, secure vs native, in one run: the issue's application (a python3 web
# service that counts visits in redis, on a single-node swarm) deployed twice from one stack file:
# once with SCONE (`scone stack deploy`: both services shielded, attested, HTTPS on the published
# port from the network shield, mutual TLS between web and redis, redis's data encrypted) and
# once native (the same file with `not_scone: "true"` on every service, deployed the same way:
# plain HTTP, plain redis).
# wrk through the published port, alternating rounds, medians; and the time from
# `stack deploy` to the first answer. Prints figures and ratios, never a pass/fail.
# This VM's load moves by 2x within a minute: each round pairs a native and a secure run back to
# back, and the median of the rounds' ratios is the figure that load shifts least.
# usage: bench/stack_bench.sh SCONE [SECONDS] [ROUNDS]   (SECONDS per wrk run, default 5; ROUNDS 7)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
fail() { echo "stack_bench: $*" >&2; exit 1; }
source "$here/../tests/docker/lib.sh"
scone="$(realpath "$1")"
secs="${2:-5}"
rounds="${3:-7}"
command -v wrk > /dev/null || apt-get install -y -qq -o DPkg::Lock::Timeout=600 wrk > /dev/null
work="$(mktemp -d)"
export XDG_STATE_HOME="$work/state"
secure=sconebenchs$$
native=sconebenchn$$
cleanup() {
  "$scone" stack rm "$secure" --quiet > /dev/null 2>&1 || true
  "$scone" stack rm "$native" --quiet > /dev/null 2>&1 || true
  "$scone" cas stop > /dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
swarm_ready "$scone"
now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Keep-alive HTTP/1.1 and one redis connection per server thread: what a real service does
# (a TLS handshake per request, or per INCR, would measure handshakes, not the service).
cat > app.py <<'PY'
import http.server, os, socket, threading

local = threading.local()

def incr():
    if getattr(local, "redis", None) is None:
        local.redis = socket.create_connection(("redis", 6379), timeout=10)
    local.redis.sendall(b"*2\r\n$4\r\nINCR\r\n$6\r\nvisits\r\n")
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = local.redis.recv(64)
        if not chunk:
            raise ConnectionError("redis closed")
        data += chunk
    return int(data[1:].strip())

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    def do_GET(self):
        body = ("visits %d %d\n" % (incr(), len(os.environ["API_TOKEN"]))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
PY
# stack_file PORT STANDARD: the application; STANDARD=1 marks every service not_scone (and gives
# the token as a plain value: a standard container has no CAS).
stack_file() {
  local port="$1" standard="$2" marker="" token='$api_token'
  if ((standard)); then marker='    not_scone: "true"'; token=bench-token-value; fi
  cat <<STACKFILE
version: "3.8"
services:
  web:
    image: scone-native/python
    command: python3 /app/app.py
$marker
    environment:
      API_TOKEN: $token
    ports:
      - "$port:8000"
    configs:
      - source: app
        target: /app/app.py
  redis:
    image: scone-native/redis
$marker
    volumes:
      - redis-data:/data
configs:
  app:
    file: app.py
volumes:
  redis-data:
STACKFILE
  ((standard)) || printf 'secrets:\n  api_token:\n    kind: ascii\n    length: 24\n'
}
secure_port=$((19000 + $$ % 500))
native_port=$((secure_port + 500))
stack_file "$secure_port" 0 > secure.yml
stack_file "$native_port" 1 > native.yml
answers() { curl -sS --max-time 5 "$@" 2>/dev/null | grep -q '^visits '; }
# up URL CURL_OPTIONS...: polls (bounded, 300 s) until the service answers; prints the seconds.
up() {
  local t0 end
  t0=$(now); end=$((SECONDS + 300))
  until answers "$@"; do
    ((SECONDS < end)) || return 1
    sleep 0.2
  done
  echo "$(now) - $t0" | bc
}

t0=$(now)
"$scone" stack deploy --quiet -c secure.yml "$secure" > /dev/null || fail "scone stack deploy failed"
"$scone" stack ca "$secure" > ca.pem
s_ready=$(up --cacert ca.pem "https://127.0.0.1:$secure_port/") || fail "the secure stack does not answer"
s_deploy=$(echo "$(now) - $t0" | bc)
t0=$(now)
"$scone" stack deploy --quiet -c native.yml "$native" > /dev/null || fail "scone stack deploy (all not_scone) failed"
n_ready=$(up "http://127.0.0.1:$native_port/") || fail "the native stack does not answer"
n_deploy=$(echo "$(now) - $t0" | bc)

# wrk_rps URL: requests/s, or nothing (wrk's output then on stderr) if any request failed.
wrk_rps() {
  local out
  out=$(wrk -t 2 -c 16 -d "${secs}s" "$1" 2>&1) || true
  if grep -q -E "Socket errors|Non-2xx" <<< "$out" || ! grep -q "^Requests/sec:" <<< "$out"; then
    echo "wrk $1:" >&2; echo "$out" >&2; return 0
  fi
  awk '/^Requests\/sec:/ {print $2}' <<< "$out"
}
: > s.txt; : > n.txt
for _ in $(seq 1 "$rounds"); do  # alternating: load changes hit both alike
  wrk_rps "http://127.0.0.1:$native_port/" >> n.txt
  wrk_rps "https://127.0.0.1:$secure_port/" >> s.txt
done
n=$(median < n.txt); s=$(median < s.txt)
[[ -n "$n" && -n "$s" ]] || fail "wrk measured nothing (native: $(cat n.txt), secure: $(cat s.txt))"
((${#n} > 0)) && (($(wc -l < n.txt) == rounds && $(wc -l < s.txt) == rounds)) || fail "a wrk run failed (above)"
echo "stack: python3 web (a redis INCR per request) + redis, wrk -t 2 -c 16 through the published port"
printf '  deploy to first answer: native %.1f s, secure %.1f s (sconify of the images %s)\n' "$n_deploy" "$s_deploy" \
  "included on a first run, reused after"
printf '  requests/s (median of %d, %d s each): native HTTP %.0f, secure HTTPS %.0f: ratio %.2f (target >= 0.7)\n' \
  "$rounds" "$secs" "$n" "$s" "$(echo "$s / $n" | bc -l)"
echo "  each round: native $(tr '\n' ' ' < n.txt)| secure $(tr '\n' ' ' < s.txt)"
paired=$(paste n.txt s.txt | awk '{printf "%.3f\n", $2 / $1}' | sort -g)
printf '  secure/native per round (native and secure back to back): median %s, range %s-%s (target >= 0.7)\n' \
  "$(median <<< "$paired")" "$(head -1 <<< "$paired")" "$(tail -1 <<< "$paired")"
