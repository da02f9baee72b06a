#!/usr/bin/env bash
# CAS over real HTTPS with mutual TLS: curl with client certificates made by openssl.
# usage: cas_test.sh SCONE [CASE]   (CASE: sessions, the default, or one hostile client's case)
set -euo pipefail
source "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
scone="$1"
case_name="${2:-sessions}"
hostile="$(cd "$(dirname "$0")" && pwd)/hostile_client.py"
work="$(mktemp -d)"
cas_pid=""
las_pid=""
cleanup() {
  [[ -n "$cas_pid" ]] && kill "$cas_pid" 2>/dev/null
  [[ -n "$las_pid" ]] && kill "$las_pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

# The platform (LAS) that seals CAS's master key and keeps its state counter.
"$scone" las serve --state las --socket "$work/las.sock" > las.txt 2>&1 &
las_pid=$!
wait_for_line las.txt "listening on" "$las_pid"

start_cas() {
  : > out.txt
  "$scone" cas serve --state state --las "$work/las.sock" --listen 127.0.0.1:0 --attestation-listen 127.0.0.1:0 \
    > out.txt 2> err.txt &
  cas_pid=$!
  wait_for_line out.txt "listening on" "$cas_pid"
  port=$(sed -n 's/.*https:\/\/127\.0\.0\.1:\([0-9]*\),.*/\1/p' out.txt)
  [[ -n "$port" ]] || fail "no port"
}
stop_cas() { kill "$cas_pid"; wait "$cas_pid" || true; cas_pid=""; }
# request USER METHOD PATH [DATA_FILE] -> body in body.txt, prints the HTTP status
request() {
  local user="$1" method="$2" path="$3" data="${4:-}"
  local args=(-sS --cacert state/cas.crt --resolve "scone-cas:$port:127.0.0.1" -o body.txt -w "%{http_code}"
              --cert "$user.crt" --key "$user.key" -X "$method")
  [[ -n "$data" ]] && args+=(--data-binary "@$data")
  curl "${args[@]}" "https://scone-cas:$port$path"
}
expect() {  # expect STATUS USER METHOD PATH [DATA] [BODY_SUBSTRING]
  local want="$1"; shift
  local got; got=$(request "$1" "$2" "$3" "${4:-}")
  [[ "$got" == "$want" ]] || { cat body.txt; fail "$2 $3 as $1: HTTP $got, expected $want"; }
  if [[ -n "${5:-}" ]]; then grep -q -- "$5" body.txt || { cat body.txt; fail "$2 $3: body lacks '$5'"; }; fi
}

for u in alice bob; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$u" \
    -keyout "$u.key" -out "$u.crt" -days 30 2>/dev/null
done
# peak_rss_kib: the most memory CAS has held (VmHWM, KiB).
peak_rss_kib() { awk '/^VmHWM/ {print $2}' "/proc/$cas_pid/status"; }
audited() {  # audited PATTERN: CAS wrote an audit record matching PATTERN (checked once it stopped)
  sqlite3 state/cas.db "select action || '|' || result from audit" | grep -q -- "$1" || fail "no audit record '$1'"
}

case "$case_name" in
sessions) ;;
san-injection)
  # A DNS name with a comma once added a SAN entry of the submitter's choosing.
  start_cas
  cat > san.yml <<'YEOF'
name: web
version: "0.3"
secrets:
  - name: cert
    kind: x509
    dns: ["web.example,DNS:bank.example"]
YEOF
  expect 400 alice POST /session san.yml "is not a host name"
  long="$(printf 'a%.0s' $(seq 1 40)).$(printf 'b%.0s' $(seq 1 30))"  # 71 characters, labels under 64
  printf 'name: web\nversion: "0.3"\nsecrets:\n  - name: cert\n    kind: x509\n    dns: [%s.example]\n' "$long" > cn.yml
  expect 400 alice POST /session cn.yml "more than X.509's 64"
  expect 404 alice GET /session/web "" "no session"
  stop_cas
  audited "rejected: line 6: dns name"
  echo "ok: $case_name"; exit 0 ;;
large-bodies)
  start_cas
  before=$(peak_rss_kib)
  # 300 MiB, chunked: read only up to the limit, then refused.
  got=$(python3 "$hostile" body 127.0.0.1 "$port" state/cas.crt alice.crt alice.key chunked 300)
  [[ "$got" == 413 ]] || fail "300 MiB chunked body: $got"
  grown=$(( $(peak_rss_kib) - before ))
  (( grown < 64 * 1024 )) || fail "CAS grew by $grown KiB for a 300 MiB chunked body"
  # 300 MiB with a Content-Length, and endless headers: the connection's byte budget ends them.
  got=$(python3 "$hostile" body 127.0.0.1 "$port" state/cas.crt alice.crt alice.key length 300)
  [[ "$got" == 413 || "$got" == closed ]] || fail "300 MiB body: $got"
  got=$(python3 "$hostile" headers 127.0.0.1 "$port" state/cas.crt alice.crt alice.key 200000)
  [[ "$got" == 4* || "$got" == closed ]] || fail "200000 header lines: $got"
  grown=$(( $(peak_rss_kib) - before ))
  (( grown < 64 * 1024 )) || fail "CAS grew by $grown KiB for large bodies and headers"
  # CAS keeps serving, and a small chunked body is read as usual.
  printf 'name: small\nversion: "0.3"\n' > small.yml
  got=$(curl -sS --cacert state/cas.crt --resolve "scone-cas:$port:127.0.0.1" -o body.txt -w "%{http_code}" \
          --cert alice.crt --key alice.key -H "Transfer-Encoding: chunked" --data-binary @small.yml \
          "https://scone-cas:$port/session")
  [[ "$got" == 201 ]] || { cat body.txt; fail "small chunked body: HTTP $got"; }
  stop_cas
  audited "rejected: request body over 1048576 bytes"
  echo "ok: $case_name"; exit 0 ;;
many-handshakes)
  # 300 TLS connections at once, each with its own thread in CAS (and that thread's random
  # generators in the secure heap): CAS holds them all and keeps serving.
  start_cas
  got=$(python3 "$hostile" handshakes 127.0.0.1 "$port" state/cas.crt alice.crt alice.key 300)
  (( got >= 290 )) || fail "only $got of 300 handshakes completed"
  kill -0 "$cas_pid" 2>/dev/null || { cat err.txt; fail "CAS died under 300 concurrent connections"; }
  expect 200 alice GET /session "" '"sessions"'
  stop_cas
  echo "ok: $case_name"; exit 0 ;;
*) fail "unknown case $case_name" ;;
esac

SECRET="GIVEN-SECRET-VALUE-$$"
cat > v1.yml <<YEOF
name: shop
version: "0.3"
services:
  - name: api
    mrenclaves: [0000000000000000000000000000000000000000000000000000000000000001]
    environment:
      PW: \$\$SCONE::pw\$\$
secrets:
  - name: pw
    kind: ascii
    value: "$SECRET"
YEOF

start_cas
expect 201 alice POST /session v1.yml '"hash"'
hash=$(sed -n 's/.*"hash":"\([0-9a-f]*\)".*/\1/p' body.txt)
expect 200 alice GET /session/shop "" "$SECRET"
expect 403 bob GET /session/shop "" "not allowed to read"
expect 200 bob GET /session "" '"sessions":\[\]'
expect 200 alice GET /session "" '"sessions":\["shop"\]'
expect 409 alice POST /session v1.yml "predecessor must be"      # update without predecessor
{ cat v1.yml; echo "predecessor: $hash"; } > v2.yml
expect 403 bob POST /session v2.yml "not allowed to update"
expect 200 alice POST /session v2.yml '"hash"'
expect 409 alice POST /session v2.yml "predecessor must be"      # the same predecessor twice
expect 404 alice GET /session/none "" "no session"
# Bad requests: 4xx with a reason, and CAS keeps serving.
printf 'name: x\nversion: "0.3"\ncolour: blue\n' > bad1.yml
expect 400 alice POST /session bad1.yml "line 3: unknown key 'colour'"
printf 'name: [unclosed\n' > bad2.yml
expect 400 alice POST /session bad2.yml "malformed YAML"
head -c $((2 * 1024 * 1024)) /dev/zero | tr '\0' 'a' > big.yml
expect 413 alice POST /session big.yml
printf '\x16\x03\x01garbage' | timeout 5 bash -c "cat > /dev/tcp/127.0.0.1/$port" || true
if curl -sS --cacert state/cas.crt --resolve "scone-cas:$port:127.0.0.1" "https://scone-cas:$port/session" \
     -o /dev/null 2>/dev/null; then
  fail "a client without a certificate was served"
fi
expect 200 alice GET /session/shop "" "$SECRET"
# No secret in plaintext at rest: database, write-ahead log, audit log.
if grep -r -a -q -- "$SECRET" state; then fail "secret in plaintext under the state directory"; fi
# Restarted, CAS keeps sessions and access rules.
stop_cas
start_cas
expect 200 alice GET /session/shop "" "predecessor: $hash"
expect 403 bob GET /session/shop
stop_cas
echo "ok: cas"
