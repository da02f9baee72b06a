#!/usr/bin/env bash
# The network shield against what a user would run instead, in one run: redis-benchmark (SET and
# GET, 50 clients, pipelining 1 and 16) and wrk against nginx (two workers; a 1 KiB and a 1 MiB
# file; with Debian's default `tcp_nopush on` and with nginx's own default off), each four ways:
# plaintext, the program's own TLS (redis `tls-port`, nginx `ssl`), stunnel in front of the
# plaintext program, and the program unmodified under `scone run` with a server rule (TLS 1.3 in
# its process); and a python3 client opening a new connection per PING (plaintext, python's ssl,
# unmodified under a client rule). Prints requests per second and the ratios shield/own TLS,
# shield/stunnel, shield/plaintext, and for the 1 MiB file the shield's bytes per second against
# one core's AES-256-GCM rate (`openssl speed`). Never passes or fails on a time; a side that
# fails prints its first error lines and "n/a".
# usage: bench/network_bench.sh SCONE [SECONDS]   (SECONDS: per wrk run; redis runs a fixed count)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
scone="$(realpath "$1")"
secs="${2:-5}"
PY=/usr/bin/python3
SCONE_SERVER_DEPS=1 SCONE_BENCH_DEPS=1 "$here/scripts/install-deps"

work="$(mktemp -d /var/tmp/scone-network-bench-XXXXXX)"
chmod 755 "$work"
started=()
cleanup() {
  stop_all
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

o="-nodes -days 2 -newkey ec -pkeyopt ec_paramgen_curve:P-256"
openssl req -x509 $o -keyout ca.key -out ca.crt -subj /CN=bench-ca 2>/dev/null
openssl req $o -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 \
  -extfile server.ext 2>/dev/null
chmod a+r server.key

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_for_port PORT PID: bounded (20 s); status 1 if PID ended or nothing listens.
wait_for_port() {
  for _ in $(seq 1 400); do
    "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $1), timeout=1).close()" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
# The shield's server rule for PORT, as `scone run` reads it from the environment.
shield() {
  local port="$1"
  shift
  SCONE_NETWORK_SHIELD_SERVER_BENCH=protected SCONE_NETWORK_SHIELD_SERVER_BENCH_PORT="TCP:$port" \
    SCONE_NETWORK_SHIELD_SERVER_BENCH_IDENTITY="$(cat server.key server.crt)" \
    SCONE_NETWORK_SHIELD_SERVER_BENCH_CLIENT_AUTH=disabled "$scone" run -- "$@"
}
# stunnel accepting TLS on PORT for the plaintext server on TARGET.
start_stunnel() {
  cat > "stunnel-$1.conf" <<EOF
foreground = yes
pid =
[bench]
accept = 127.0.0.1:$1
connect = 127.0.0.1:$2
cert = $work/server.crt
key = $work/server.key
sslVersionMin = TLSv1.3
EOF
  stunnel4 "stunnel-$1.conf" > "stunnel-$1.log" 2>&1 &
  started+=($!)
  wait_for_port "$1" "$!"
}
stop_all() {
  local p
  # Stopped first: an nginx master whose worker dies starts another, which would outlive it.
  for p in "${started[@]}"; do kill -STOP "$p" 2>/dev/null || true; pkill -9 -P "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done
  for p in "${started[@]}"; do wait "$p" 2>/dev/null || true; done
  started=()
}
ratio() { $PY -c "import sys; a,b=sys.argv[1],sys.argv[2]; print('%.2f' % (float(a)/float(b)) if a!='n/a' and b!='n/a' and float(b) else 'n/a')" "$1" "$2"; }
declare -A rps

# --- redis ---
redis_server() {  # redis_server MODE PORT
  local common=(--bind 127.0.0.1 --save "" --appendonly no)
  case "$1" in
    plain | stunnel) redis-server --port "$2" "${common[@]}" ;;
    own) redis-server --port 0 --tls-port "$2" --tls-cert-file server.crt --tls-key-file server.key \
           --tls-ca-cert-file ca.crt --tls-auth-clients no --tls-protocols TLSv1.3 "${common[@]}" ;;
    shield) shield "$2" redis-server --port "$2" "${common[@]}" ;;
  esac
}
for mode in plain own stunnel shield; do
  port=$(free_port)
  server_port=$port
  [[ "$mode" == stunnel ]] && server_port=$(free_port)
  redis_server "$mode" "$server_port" > "redis-$mode.log" 2>&1 &
  started+=($!)
  tls=()
  [[ "$mode" == plain ]] || tls=(--tls --cacert ca.crt)
  if ! wait_for_port "$server_port" "$!" || { [[ "$mode" == stunnel ]] && ! start_stunnel "$port" "$server_port"; }; then
    echo "redis $mode did not start:" >&2; head -5 "redis-$mode.log" >&2
    for p in 1 16; do rps[redis-$mode-SET-$p]=n/a; rps[redis-$mode-GET-$p]=n/a; done
    stop_all
    continue
  fi
  for p in 1 16; do
    n=$((p == 1 ? 100000 : 400000))
    out=$(timeout -s KILL 300 redis-benchmark "${tls[@]}" -h localhost -p "$port" -t set,get -c 50 -n "$n" -P "$p" -q 2>&1) || true
    for op in SET GET; do
      v=$(tr '\r' '\n' <<<"$out" | grep -o "^$op: [0-9.]* requests per second" | awk '{print $2}' || true)
      rps[redis-$mode-$op-$p]=${v:-n/a}
      [[ -n "$v" ]] || { echo "redis-benchmark $mode $op -P $p:" >&2; head -3 <<<"$out" >&2; }
    done
  done
  stop_all
done

# --- a new connection per request (the client's side too: connect, PING, close) ---
# What a client that does not pool connections pays: the handshake, and the shield's client side
# (python3 unmodified under `scone run` with a client rule) against python3's own ssl module.
cat > connect_client.py <<'PYEOF'
import socket, ssl, sys, time
port, tls, seconds = int(sys.argv[1]), sys.argv[2] == "tls", float(sys.argv[3])
context = ssl.create_default_context(cafile="ca.crt") if tls else None
n, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    s = socket.create_connection(("127.0.0.1", port))
    if tls:
        s = context.wrap_socket(s, server_hostname="localhost")
    s.sendall(b"PING\r\n")
    if s.recv(64) != b"+PONG\r\n":
        sys.exit("no PONG")
    s.close()
    n += 1
print(n / seconds)
PYEOF
for mode in plain own shield; do
  port=$(free_port)
  redis_server "$mode" "$port" > "redis-connect-$mode.log" 2>&1 &
  started+=($!)
  v=""
  if wait_for_port "$port" "$!"; then
    case "$mode" in
      plain) v=$(timeout -s KILL 60 "$PY" connect_client.py "$port" plain 3 2>&1) || true ;;
      own) v=$(timeout -s KILL 60 "$PY" connect_client.py "$port" tls 3 2>&1) || true ;;
      shield) v=$(SCONE_NETWORK_SHIELD_CLIENT_BENCH=protected SCONE_NETWORK_SHIELD_CLIENT_BENCH_DESTINATION="TCP:127.0.0.1:$port" \
                    SCONE_NETWORK_SHIELD_CLIENT_BENCH_SERVER_DNS_NAME=localhost SCONE_NETWORK_SHIELD_CLIENT_BENCH_SERVER_AUTH="$(cat ca.crt)" \
                    timeout -s KILL 60 "$scone" run -- "$PY" connect_client.py "$port" plain 3 2>&1) || true ;;
    esac
  fi
  [[ "$v" =~ ^[0-9.]+$ ]] || { echo "new connections $mode: ${v:0:200}" >&2; v=n/a; }
  rps[connect-$mode]=$v
  rps[connect-stunnel]=n/a
  stop_all
done

# --- nginx ---
mkdir -p www tmp
head -c 1024 /dev/urandom > www/1k.bin
head -c 1048576 /dev/urandom > www/1m.bin
chmod -R a+rX www
# NOPUSH: Debian's default nginx.conf has `tcp_nopush on` (TCP_CORK around a response's headers
# and its sendfile); "off" is nginx's own default, the bench's row before.
nginx_conf() {  # nginx_conf MODE PORT NOPUSH
  local listen="listen 127.0.0.1:$2;"
  [[ "$1" == own ]] && listen="listen 127.0.0.1:$2 ssl; ssl_certificate $work/server.crt; ssl_certificate_key $work/server.key; ssl_protocols TLSv1.3;"
  cat > "nginx-$1.conf" <<EOF
daemon off;
master_process on;
worker_processes 2;
pid $work/tmp/nginx-$1.pid;
error_log $work/tmp/error-$1.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush $3;
  keepalive_requests 1000000;
  client_body_temp_path $work/tmp;
  server { $listen root $work/www; }
}
EOF
}
for nopush in on off; do
for mode in plain own stunnel shield; do
  port=$(free_port)
  server_port=$port
  [[ "$mode" == stunnel ]] && server_port=$(free_port)
  nginx_conf "$mode" "$server_port" "$nopush"
  if [[ "$mode" == shield ]]; then
    shield "$server_port" nginx -c "$work/nginx-$mode.conf" > "nginx-$mode.log" 2>&1 &
  else
    nginx -c "$work/nginx-$mode.conf" > "nginx-$mode.log" 2>&1 &
  fi
  started+=($!)
  scheme=https
  [[ "$mode" == plain ]] && scheme=http
  if ! wait_for_port "$server_port" "$!" || { [[ "$mode" == stunnel ]] && ! start_stunnel "$port" "$server_port"; }; then
    echo "nginx $mode did not start:" >&2; head -5 "nginx-$mode.log" "tmp/error-$mode.log" >&2 2>/dev/null || true
    rps[nginx$nopush-$mode-1k]=n/a; rps[nginx$nopush-$mode-1m]=n/a
    stop_all
    continue
  fi
  for file in 1k 1m; do
    out=$(timeout -s KILL $((secs + 60)) wrk -t 2 -c 50 -d "${secs}s" "$scheme://localhost:$port/$file.bin" 2>&1) || true
    v=$(grep -o "^Requests/sec: *[0-9.]*" <<<"$out" | awk '{print $2}' || true)
    rps[nginx$nopush-$mode-$file]=${v:-n/a}
    [[ -n "$v" && "$out" != *"Non-2xx"* && "$out" != *"Socket errors"* ]] ||
      { echo "wrk $mode $file:" >&2; grep -E "errors|Non-2xx" <<<"$out" >&2 || head -3 <<<"$out" >&2; }
  done
  stop_all
done
done

# --- one core's AES-256-GCM rate, bytes per second ---
aes=$(openssl speed -evp aes-256-gcm -bytes 16384 -seconds 2 2>/dev/null | awk 'tolower($1) == "aes-256-gcm" {print $2}' | tr -d k)
aes_bytes=$($PY -c "print(float('$aes') * 1000 if '$aes' else 0)")

printf '\n%-28s %12s %12s %12s %12s   %8s %8s %8s\n' "requests/s" plaintext own-TLS stunnel shield "/own" "/stunnel" "/plain"
row() {
  local name="$1" key="$2"
  printf '%-28s %12s %12s %12s %12s   %8s %8s %8s\n' "$name" "${rps[$key-plain]%.*}" "${rps[$key-own]%.*}" \
    "${rps[$key-stunnel]%.*}" "${rps[$key-shield]%.*}" "$(ratio "${rps[$key-shield]}" "${rps[$key-own]}")" \
    "$(ratio "${rps[$key-shield]}" "${rps[$key-stunnel]}")" "$(ratio "${rps[$key-shield]}" "${rps[$key-plain]}")"
}
for p in 1 16; do
  for op in SET GET; do
    for mode in plain own stunnel shield; do rps[r$op$p-$mode]=${rps[redis-$mode-$op-$p]}; done
    row "redis $op -P $p (50 clients)" "r$op$p"
  done
done
for nopush in on off; do
  for file in 1k 1m; do
    for mode in plain own stunnel shield; do rps[n$file$nopush-$mode]=${rps[nginx$nopush-$mode-$file]}; done
    row "nginx $file, tcp_nopush $nopush" "n$file$nopush"
  done
done
row "redis PING, new conn each" connect
shield_bytes=$($PY -c "v='${rps[nginxon-shield-1m]}'; print(float(v) * 1048576 if v != 'n/a' else 'n/a')")
echo
echo "nginx 1 MiB through the shield: $(ratio "$shield_bytes" "$aes_bytes") of one core's AES-256-GCM rate ($aes kB/s at 16 KiB)"
echo "targets: shield >= 0.95x own TLS, >= 1.2x stunnel, >= 0.7x plaintext"
