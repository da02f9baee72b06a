#!/usr/bin/env bash
# Services that get their configuration only through CAS: real processes (python3 under the
# runtime), the user's local CAS and LAS (real TLS, real unix socket), sim evidence.
# usage: attestation_test.sh SCONE CASE
set -euo pipefail
source "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
scone="$1"
case_name="$2"
work="$(mktemp -d)"
export XDG_STATE_HOME="$work/state"
svc_pid=""
bg_pids=()  # more background processes of a case: services, relays, tcpdump
trap 'for p in $svc_pid "${bg_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; "$scone" cas stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
cd "$work"
PY=/usr/bin/python3
cas_dir="$XDG_STATE_HOME/scone/cas"

# The service prints what it got; the host passes other arguments, which must not reach it.
cat > app.py <<'EOF'
import os, sys
print("argv", " ".join(sys.argv[1:]))
print("env", os.environ.get("GREETING"), "host-env", os.environ.get("HOST_ONLY", "absent"))
print("cwd", os.getcwd())
print("config", open("/etc/scone-test/app.ini").read().strip())
with open(sys.argv[0].replace("app.py", "data/counter.txt"), "a") as f:
    f.write("run\n")
print("runs", open(sys.argv[0].replace("app.py", "data/counter.txt")).read().count("run"))
# The host sees the command line and environment it passed, never CAS's.
for proc in ("/proc/self/cmdline", "/proc/self/environ"):
    if os.environ["TOKEN_CHECK"].encode() in open(proc, "rb").read():
        print("LEAK in", proc)
EOF

# session FILE SERVICE_POLICY_LINES [TOLERATE]: a session for app.py under python3.
session() {
  local file="$1" policy="$2" tolerate="${3:-[sim, debug-mode]}"
  cat > "$file" <<EOF
name: ${SESSION_NAME:-svc}
version: "0.3"
${PREDECESSOR:+predecessor: $PREDECESSOR}
security:
  attestation:
    tolerate: $tolerate
volumes:
  - name: data
services:
  - name: app
$policy
    command: python3 $work/app.py --token \$\$SCONE::token\$\$
    environment:
      GREETING: hello-\$\$SCONE::token\$\$
      TOKEN_CHECK: \$\$SCONE::token\$\$
    pwd: $work/pwd
    image_name: app
images:
  - name: app
    volumes:
      - name: data
        path: $work/data
    injection_files:
      - path: /etc/scone-test/app.ini
        content: |
          password=\$\$SCONE::token\$\$
          cert_lines=\$\$SCONE::api_cert.crt\$\$
secrets:
  - name: token
    kind: ascii
    size: 24
  - name: api_ca
    kind: x509-ca
  - name: api_cert
    kind: x509
    issuer: api_ca
    dns: [api.example]
EOF
}
measure() { "$scone" measure "$1" | tail -1; }
run_app() { HOST_ONLY=1 "$scone" run --config-id "${SESSION_NAME:-svc}/app" "$@" -- "${PROGRAM:-$PY}" host-arg; }
# The same in the background: exec, so that $! is the service itself (kill -9 of a subshell left
# the service running after the test).
run_app_in_background() { HOST_ONLY=1 exec "$scone" run --config-id "${SESSION_NAME:-svc}/app" -- "${PROGRAM:-$PY}" host-arg; }
expect_refused() {  # expect_refused PATTERN [run_app args...]
  local pattern="$1"; shift
  set +e
  run_app "$@" > out.txt 2> err.txt
  local rc=$?
  set -e
  [[ $rc != 0 ]] || { cat out.txt; fail "the service started; expected refusal ($pattern)"; }
  [[ ! -s out.txt ]] || { cat out.txt; fail "the refused service ran"; }
  grep -q -- "$pattern" err.txt || { cat err.txt; fail "refusal does not say '$pattern'"; }
}
mkdir -p pwd
# start_other_las: a LAS with a platform key of its own at $work/other.sock (pid in las_pid).
start_other_las() {
  "$scone" las serve --state other-las --socket "$work/other.sock" > las.out 2>&1 &
  las_pid=$!
  wait_for_line las.out "listening on" "$las_pid"
}
# run_on_other_las: the service attests with the other LAS's evidence; exit status in rc.
run_on_other_las() {
  set +e
  HOST_ONLY=1 "$scone" run --config-id svc/app --cas-addr "$(cat "$cas_dir/attestation")" \
    --cas-cert "$cas_dir/cas.crt" --las "$work/other.sock" -- "$PY" > out.txt 2> err.txt
  rc=$?
  set -e
  kill "$las_pid"; wait "$las_pid" || true
  [[ $rc != 0 && ! -s out.txt ]] || fail "evidence from an untrusted platform was accepted"
  grep -q "platform that is not trusted" err.txt || { cat err.txt; fail "no reason given"; }
}

case "$case_name" in
config-through-cas)
  session s.yml "    mrenclaves: [$(measure $PY)]"
  "$scone" session create s.yml >/dev/null
  run_app > out.txt 2> err.txt || { cat err.txt; fail "the service did not run"; }
  token=$(sed -n 's/^argv --token \(.*\)$/\1/p' out.txt)
  [[ ${#token} == 24 ]] || { cat out.txt; fail "no generated 24-character token in the arguments"; }
  grep -q "^env hello-$token host-env absent$" out.txt || { cat out.txt; fail "environment not CAS's"; }
  grep -q "^cwd $work/pwd$" out.txt || { cat out.txt; fail "working directory not CAS's"; }
  grep -q "^config password=$token$" out.txt || { cat out.txt; fail "injected file missing or wrong"; }
  grep -q "^runs 1$" out.txt || { cat out.txt; fail "volume not usable"; }
  if grep -q LEAK out.txt; then cat out.txt; fail "CAS's configuration visible to the host"; fi
  [[ ! -e /etc/scone-test ]] || fail "the injected file was written to disk"
  # The certificate CAS issued chains to the session's CA and names the DNS name.
  run_app > out2.txt 2>/dev/null
  grep -q "^runs 2$" out2.txt || fail "second run did not see the first run's data"
  [[ "$(sed -n 's/^argv --token //p' out2.txt)" == "$token" ]] || fail "generated secret changed between runs"
  # Secrets never in plaintext on disk: volume, CAS database (+WAL), audit, logs.
  if grep -r -a -l -- "$token" data "$XDG_STATE_HOME" 2>/dev/null; then fail "secret in plaintext on disk"; fi
  "$scone" cas stop  # CAS writes its last audit records as it stops
  sqlite3 "$cas_dir/cas.db" "select action, result from audit" | grep -q "^attest|ok: sim" || fail "no attest audit record"
  if grep -r -a -l -- "$token" "$XDG_STATE_HOME" 2>/dev/null; then fail "secret in plaintext in CAS's state"; fi
  ;;
injected-certificate)
  cat > cert_app.py <<'EOF'
import ssl, sys, subprocess
text = open("/etc/scone-test/app.ini").read()
pem = text[text.index("-----BEGIN"):]
open(sys.argv[1], "w").write(pem)
EOF
  session s.yml "    mrenclaves: [$(measure $PY)]"
  sed -i "s|command: python3 $work/app.py.*|command: python3 $work/cert_app.py $work/cert.pem|" s.yml
  "$scone" session create s.yml >/dev/null
  run_app 2> err.txt || { cat err.txt; fail "service failed"; }
  openssl x509 -in cert.pem -noout -ext subjectAltName | grep -q "DNS:api.example" || fail "certificate lacks the DNS name"
  openssl x509 -in cert.pem -noout -issuer | grep -q "api_ca" || fail "certificate not issued by the session CA"
  ;;
modified-executable)
  session s.yml "    mrenclaves: [$(measure $PY)]"
  "$scone" session create s.yml >/dev/null
  cp "$PY" ./python3 && printf 'x' >> ./python3
  PROGRAM=$work/python3 expect_refused "is not one the policy names"
  # A modified library: the same program, loading a changed copy of one of its libraries.
  mkdir lib && cp "$(ldd "$PY" | awk '/libexpat/ {print $3}')" lib/ && printf 'x' >> lib/libexpat.so.1
  LD_LIBRARY_PATH=$work/lib expect_refused "is not one the policy names"
  run_app > /dev/null 2>&1 || fail "the unmodified program was refused"
  ;;
signer)
  cp "$PY" ./python3
  "$scone" sign ./python3 --key signer.pem --product-id 7 --svn 2 > sig.txt 2>/dev/null
  mrsigner=$(awk '/^mrsigner/ {print $2}' sig.txt)
  session s.yml "    mrsigner: $mrsigner
    isvprodid: 7
    isvsvn: 2"
  "$scone" session create s.yml >/dev/null
  PROGRAM=$work/python3 run_app > out.txt 2> err.txt || { cat err.txt; fail "signed program refused"; }
  # Too low a security version: the session now asks for 3.
  hash=$("$scone" session show svc 2>&1 >/dev/null | awk '{print $NF}')
  PREDECESSOR=$hash session s2.yml "    mrsigner: $mrsigner
    isvprodid: 7
    isvsvn: 3"
  "$scone" session update s2.yml >/dev/null
  PROGRAM=$work/python3 expect_refused "security version 2 is below 3"
  # Another signer's signature over the same program.
  "$scone" sign ./python3 --key other.pem --product-id 7 --svn 9 -o other.sig > /dev/null 2>&1
  PROGRAM=$work/python3 expect_refused "signer does not match" --sigstruct other.sig
  ;;
sim-not-tolerated)
  session s.yml "    mrenclaves: [$(measure $PY)]" "[debug-mode]"
  "$scone" session create s.yml >/dev/null
  expect_refused "does not tolerate"
  ;;
untrusted-platform)
  session s.yml "    mrenclaves: [$(measure $PY)]"
  "$scone" session create s.yml >/dev/null
  # A LAS with another platform key, which this CAS was never told to trust.
  start_other_las
  run_on_other_las
  # Trusting it (as the CAS's administrator) makes the same run pass.
  "$scone" cas platform trust "$("$scone" las platform-key --state other-las)" > /dev/null
  "$scone" cas platform list | grep -q "$("$scone" las platform-key --state other-las)" || fail "platform not listed"
  ;;
scone-environment)
  # SCONE's own variables work as scone run's options: SCONE_CONFIG_ID means attestation, and a
  # service whose attestation fails never runs (not even with the host's arguments).
  session s.yml "    mrenclaves: [$(measure $PY)]"
  "$scone" session create s.yml >/dev/null
  SCONE_CONFIG_ID=svc/app HOST_ONLY=1 "$scone" run -- "$PY" host-arg > out.txt 2> err.txt ||
    { cat err.txt; fail "SCONE_CONFIG_ID did not run the service"; }
  grep -q "^argv --token " out.txt || { cat out.txt; fail "the service did not get CAS's arguments"; }
  grep -q "host-arg" out.txt && fail "the host's arguments reached the service"
  addr=$(cat "$cas_dir/attestation")
  key_hash=$(openssl x509 -in "$cas_dir/cas.crt" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1)
  SCONE_CONFIG_ID=svc/app SCONE_CAS_ADDR="$addr" SCONE_LAS_ADDR="unix:$XDG_STATE_HOME/scone/las/las.sock" \
    SCONE_CAS_KEY_HASH="$key_hash" "$scone" run -- "$PY" host-arg > out.txt 2> err.txt ||
    { cat err.txt; fail "SCONE_CAS_ADDR and SCONE_LAS_ADDR were not used"; }
  grep -q "^argv --token " out.txt || { cat out.txt; fail "no attested run through SCONE_CAS_ADDR"; }
  set +e
  SCONE_CONFIG_ID=svc/no-such-service "$scone" run -- "$PY" -c 'print("RAN UNATTESTED")' > out.txt 2> err.txt
  rc=$?
  SCONE_CONFIG_ID=svc/app "$scone" run --volume "$work/data:$work/none" -- "$PY" -c 'print("RAN")' > out2.txt 2> err2.txt
  rc2=$?
  set -e
  [[ $rc != 0 && ! -s out.txt ]] || { cat out.txt; fail "a service whose attestation failed ran"; }
  grep -q "attestation for svc/no-such-service" err.txt || { cat err.txt; fail "no reason given"; }
  [[ $rc2 == 2 || $rc2 == 1 ]] && [[ ! -s out2.txt ]] && grep -q "SCONE_CONFIG_ID" err2.txt ||
    { cat err2.txt; fail "--volume with SCONE_CONFIG_ID was not refused"; }
  # Set but empty (a template's unset variable) or malformed: refused before anything runs,
  # through scone run and with the runtime preloaded by hand (before: an empty one ran the
  # program without attestation, rc 0).
  for id in "" svc "svc/app/x" "svc/app "; do
    for how in scone preload; do
      rc=0
      if [[ $how == scone ]]; then
        SCONE_CONFIG_ID="$id" "$scone" run -- "$PY" -c 'print("RAN UNATTESTED")' > out.txt 2> err.txt || rc=$?
      else
        SCONE_CONFIG_ID="$id" LD_PRELOAD="$(dirname "$scone")/libscone-runtime.so" "$PY" -c 'print("RAN UNATTESTED")' \
          > out.txt 2> err.txt || rc=$?
      fi
      [[ $rc != 0 && ! -s out.txt ]] || { cat out.txt; fail "SCONE_CONFIG_ID='$id' ($how) ran the program"; }
      grep -q "SCONE_CONFIG_ID: .*\(empty\|not SESSION/SERVICE\|white space\)" err.txt ||
        { cat err.txt; fail "SCONE_CONFIG_ID='$id' ($how): no reason naming it"; }
    done
  done
  ;;
network-shield)
  # The network shield's rules from the session's environment only: the identity is a
  # certificate the session's CA issued ($$SCONE::web.key$$ and .crt), the program's environment
  # holds none of the variables, and the host's variables are ignored.
  port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p www && echo "served-through-cas" > www/index.html
  cat > web.py <<PYEOF
import os, runpy, sys
leaked = [k for k in os.environ if k.startswith("SCONE_NETWORK_SHIELD")]
open("$work/leaked.txt", "w").write(" ".join(leaked) or "none")
open("$work/ca.crt", "w").write(os.environ["WEB_CA"])
sys.argv = ["http.server", "-b", "127.0.0.1", "-d", "$work/www", "$port"]
runpy.run_module("http.server", run_name="__main__")
PYEOF
  cat > s.yml <<EOF
name: svc
version: "0.3"
security:
  attestation:
    tolerate: [sim, debug-mode]
services:
  - name: app
    mrenclaves: [$(measure $PY)]
    command: python3 $work/web.py
    environment:
      WEB_CA: \$\$SCONE::web_ca.crt\$\$
      SCONE_NETWORK_SHIELD: protected
      SCONE_NETWORK_SHIELD_SERVER_WEB: protected
      SCONE_NETWORK_SHIELD_SERVER_WEB_PORT: TCP:$port
      SCONE_NETWORK_SHIELD_SERVER_WEB_IDENTITY: \$\$SCONE::web.key\$\$\$\$SCONE::web.crt\$\$
      SCONE_NETWORK_SHIELD_SERVER_WEB_CLIENT_AUTH: disabled
    pwd: $work
secrets:
  - name: web_ca
    kind: x509-ca
  - name: web
    kind: x509
    issuer: web_ca
    dns: [localhost]
EOF
  "$scone" session create s.yml >/dev/null
  SCONE_NETWORK_SHIELD_SERVER_WEB=unprotected SCONE_NETWORK_SHIELD_SERVER_WEB_PORT="TCP:$port" \
    "$scone" run --config-id svc/app -- "$PY" > web.out 2>&1 &
  svc_pid=$!
  for _ in $(seq 1 200); do
    "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $port), timeout=1).close()" 2>/dev/null && break
    kill -0 "$svc_pid" || break
    sleep 0.05
  done
  [[ -s leaked.txt ]] || { cat web.out; fail "the service did not start"; }
  [[ "$(cat leaked.txt)" == none ]] || fail "the program's environment holds $(cat leaked.txt)"
  curl -sS --cacert ca.crt "https://localhost:$port/index.html" > body || { cat web.out; fail "curl over TLS"; }
  [[ "$(cat body)" == "served-through-cas" ]] || fail "body"
  if curl -sS -m 5 "http://127.0.0.1:$port/index.html" >/dev/null 2>&1; then fail "plaintext served: the host's rule was used"; fi
  ! tr '\0' '\n' < "/proc/$svc_pid/environ" | grep -q "PRIVATE KEY" || fail "a private key in /proc/PID/environ"
  ;;
network-shield-defaults)
  # CAS defaults: two services of one session with SCONE_NETWORK_SHIELD=protected and nothing
  # else (no identity, no CA) talk mutual TLS with certificates the session CA issued them:
  # python3's http.server and a python3 urllib client, through a relay that logs the wire and
  # under tcpdump. An outside curl verifies a service with the CA `scone session ca` prints; a
  # client of another session, and a plaintext client, are refused.
  MARKER="SCONE-CAS-NET-MARKER-$$"
  wait_for_port() { port_listening "$@"; }  # PORT PID: status 1 instead of failing
  port=$(free_port); relay=$(free_port); public=$(free_port)
  mkdir -p www && echo "$MARKER served" > www/index.html
  # The client also runs itself as a child (exec: the identity travels in the runtime's secret
  # configuration descriptor, not in the environment).
  cat > client.py <<PYEOF
import os, subprocess, sys, urllib.request, urllib.error
leaked = [k for k, v in os.environ.items() if k.startswith("SCONE_NETWORK_SHIELD") or "PRIVATE KEY" in v]
print("leaked", " ".join(leaked) or "none")
body = urllib.request.urlopen("http://127.0.0.1:%s/index.html" % sys.argv[1], timeout=20).read()
assert body == b"$MARKER served\n", body
if sys.argv[2:] == ["child"]:
    print("child ok")
    sys.exit(0)
try:
    urllib.request.urlopen("http://127.0.0.1:%s/$MARKER-in-the-path" % sys.argv[1], timeout=20)
except urllib.error.HTTPError as e:
    assert e.code == 404
child = subprocess.run([sys.executable, sys.argv[0], sys.argv[1], "child"], capture_output=True, text=True)
assert "child ok" in child.stdout and "leaked none" in child.stdout, child.stdout + child.stderr
print("client ok")
PYEOF
  m=$(measure $PY)
  # net_session FILE NAME CLIENT_ENV: the session (web, client, public); CLIENT_ENV is the
  # client's environment.
  net_session() {
    cat > "$1" <<EOF
name: $2
version: "0.3"
security:
  attestation:
    tolerate: [sim, debug-mode]
services:
  - name: web
    mrenclaves: [$m]
    command: python3 -m http.server -b 127.0.0.1 -d $work/www $port
    environment:
      SCONE_NETWORK_SHIELD: protected
    pwd: $work
  - name: client
    mrenclaves: [$m]
    command: python3 $work/client.py $relay
    environment:
$3
    pwd: $work
  - name: public
    mrenclaves: [$m]
    command: python3 -m http.server -b 127.0.0.1 -d $work/www $public
    environment:
      SCONE_NETWORK_SHIELD_SERVER_PUBLIC: protected
      SCONE_NETWORK_SHIELD_SERVER_PUBLIC_PORT: TCP:$public
      SCONE_NETWORK_SHIELD_SERVER_PUBLIC_CLIENT_AUTH: disabled
EOF
  }
  net_session net.yml net "      SCONE_NETWORK_SHIELD: protected"
  "$scone" session create net.yml >/dev/null
  "$scone" session ca net > ca.pem || fail "scone session ca"
  openssl x509 -in ca.pem -noout -subject | grep -q "CN = SCONE session net" || { cat ca.pem; fail "not the session CA"; }
  "$scone" run --config-id net/web -- "$PY" > web.out 2>&1 &
  bg_pids+=($!)
  wait_for_port "$port" "${bg_pids[-1]}" || { cat web.out; fail "the web service did not start"; }
  "$scone" run --config-id net/public -- "$PY" > public.out 2>&1 &
  bg_pids+=($!)
  wait_for_port "$public" "${bg_pids[-1]}" || { cat public.out; fail "the public service did not start"; }
  "$PY" "$(dirname "$0")/../relay.py" "$relay" "$port" relay.log &
  bg_pids+=($!)
  wait_for_port "$relay" "${bg_pids[-1]}" || fail "the relay did not start"
  : > relay.log
  start_capture wire.pcap "$port" "$relay"
  bg_pids+=("$capture_pid")
  timeout -s KILL 30 "$scone" run --config-id net/client -- "$PY" > client.out 2>&1 ||
    { cat client.out web.out; fail "the client service"; }
  grep -q "^client ok$" client.out || { cat client.out; fail "client"; }
  grep -q "^leaked none$" client.out || { cat client.out; fail "the client's environment holds the shield's variables"; }
  grep -q "GET /$MARKER-in-the-path" web.out || { cat web.out; fail "the web service did not get the request"; }
  stop_capture wire.pcap
  check_capture wire.pcap "$MARKER"
  "$PY" - relay.log "$MARKER" <<'PYEOF' || fail "plaintext through the relay"
import sys
data = open(sys.argv[1], "rb").read()
assert data, "nothing crossed the relay"
assert sys.argv[2].encode() not in data, "marker on the wire"
assert data.startswith(b"\x16\x03"), "not TLS: %r" % data[:16]
PYEOF
  for p in "${bg_pids[0]}" "${bg_pids[1]}"; do
    ! tr '\0' '\n' < "/proc/$p/environ" | grep -q "PRIVATE KEY\|SCONE_NETWORK_SHIELD" ||
      fail "/proc/$p/environ holds the shield's configuration"
  done
  # An outside client: curl verifies the services with the session CA. The public rule names no
  # identity and asks for no client certificate: curl gets the file. The web service asks for a
  # certificate of the session CA: curl verifies the service, then is refused.
  curl -sS -v --cacert ca.pem "https://localhost:$public/index.html" > body 2> curl.log ||
    { cat curl.log public.out; fail "curl with the session CA"; }
  [[ "$(cat body)" == "$MARKER served" ]] || fail "body through curl"
  grep -q "subject: CN=public" curl.log && grep -q "issuer: CN=SCONE session net" curl.log ||
    { cat curl.log; fail "curl did not see the service's certificate from the session CA"; }
  if curl -sS -v --cacert ca.pem "https://localhost:$port/index.html" > body2 2> curl2.log; then
    fail "the web service served a client without a certificate"
  fi
  grep -q "SSL certificate verify ok" curl2.log || { cat curl2.log; fail "curl did not verify the web service"; }
  ! grep -q "$MARKER" body2 || fail "the web service served a client without a certificate"
  # Another session's client: its own CA certified it. Told to trust this session's CA, it
  # accepts the server; the server refuses it.
  {
    echo "      SCONE_NETWORK_SHIELD: protected"
    echo "      SCONE_NETWORK_SHIELD_CLIENT_WEB: protected"
    echo "      SCONE_NETWORK_SHIELD_CLIENT_WEB_DESTINATION: TCP:127.0.0.1:$relay"
    echo "      SCONE_NETWORK_SHIELD_CLIENT_WEB_SERVER_AUTH: |"
    sed 's/^/        /' ca.pem
  } > intruder.env
  net_session other.yml other "$(cat intruder.env)"
  "$scone" session create other.yml >/dev/null
  "$scone" session ca other > other-ca.pem
  ! cmp -s ca.pem other-ca.pem || fail "two sessions share a CA"
  if timeout -s KILL 30 "$scone" run --config-id other/client -- "$PY" > intruder.out 2>&1; then
    fail "a client of another session was served"
  fi
  ! grep -q "client ok" intruder.out || fail "a client of another session was served"
  grep -q "scone: network shield: SCONE_NETWORK_SHIELD=protected (no rule names TCP:$port): connection with 127.0.0.1:[0-9]* failed: handshake: certificate verification failed" web.out ||
    { cat web.out intruder.out; fail "the web service did not refuse the other session's client"; }
  # With the defaults alone, another session's client refuses this session's server.
  net_session other2.yml other2 "      SCONE_NETWORK_SHIELD: protected"
  "$scone" session create other2.yml >/dev/null
  if timeout -s KILL 30 "$scone" run --config-id other2/client -- "$PY" > intruder2.out 2>&1; then
    fail "a client of another session accepted this session's server"
  fi
  grep -q "scone: network shield: SCONE_NETWORK_SHIELD=protected (no rule names TCP:127.0.0.1:$relay): .*certificate verification failed" intruder2.out ||
    { cat intruder2.out; fail "no scone: line for another session's server"; }
  # Plaintext: refused with a scone: line; the service goes on serving.
  if curl -sS -m 5 "http://127.0.0.1:$port/index.html" > plain.out 2>&1; then fail "plaintext HTTP was served"; fi
  ! grep -q "$MARKER" plain.out || fail "a plaintext reply carried the file"
  timeout -s KILL 30 "$scone" run --config-id net/client -- "$PY" > client2.out 2>&1 ||
    { cat client2.out web.out; fail "the web service stopped serving"; }
  grep -q "scone: network shield: SCONE_NETWORK_SHIELD=protected (no rule names TCP:$port): connection with 127.0.0.1:[0-9]* failed: handshake: .*http request" web.out ||
    { cat web.out; fail "no scone: line for the plaintext client"; }
  # The session CA stays across a restart of CAS.
  "$scone" cas stop
  "$scone" session ca net > ca2.pem
  cmp -s ca.pem ca2.pem || fail "the session CA changed across a restart of CAS"
  ;;
wrong-cas)
  session s.yml "    mrenclaves: [$(measure $PY)]"
  "$scone" session create s.yml >/dev/null
  # A server with another key at CAS's address: the runtime refuses to talk to it.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=evil" \
    -keyout evil.key -out evil.crt -days 1 2>/dev/null
  addr=$(cat "$cas_dir/attestation")
  set +e
  HOST_ONLY=1 "$scone" run --config-id svc/app --cas-addr "$addr" --cas-cert evil.crt \
    --las "$XDG_STATE_HOME/scone/las/las.sock" -- "$PY" > out.txt 2> err.txt
  rc=$?
  set -e
  [[ $rc != 0 && ! -s out.txt ]] || fail "the runtime trusted a CAS with another key"
  grep -q "is not the CAS whose key" err.txt || { cat err.txt; fail "no reason given"; }
  ;;
rollback-across-restarts)
  session s.yml "    mrenclaves: [$(measure $PY)]"
  "$scone" session create s.yml >/dev/null
  run_app > /dev/null 2>&1 || fail "first run"
  cp -a data data.old
  run_app > out.txt 2>/dev/null && grep -q "^runs 2$" out.txt || fail "second run"
  token=$(sed -n 's/^argv --token //p' out.txt)
  # CAS restarted: sessions, secrets and volume states survive.
  "$scone" cas stop
  run_app > out.txt 2> err.txt || { cat err.txt; fail "run after CAS restart"; }
  grep -q "^runs 3$" out.txt || fail "volume lost across CAS restart"
  [[ "$(sed -n 's/^argv --token //p' out.txt)" == "$token" ]] || fail "secret changed across CAS restart"
  # The volume rolled back to an older copy: refused at the next start.
  rm -rf data && cp -a data.old data
  expect_refused "rolled back to an older copy"
  # Deleted: refused too (CAS knows it existed).
  rm -rf data
  expect_refused "is missing"
  ;;
console-shield)
  # SCONE_CONSOLE_SHIELD=protected in the session: the service's stdout and stderr are sealed
  # under a key CAS holds for this session and service; its owner decrypts them with
  # `scone console decrypt --session --service`, another client is refused; the host's
  # SCONE_CONSOLE_SHIELD is ignored (disabled in the session: the console is the program's).
  marker="SCONE-CAS-CONSOLE-MARKER-$$"
  cat > console_app.py <<PYEOF
import os, sys
print("$marker", os.environ.get("SCONE_CONSOLE_SHIELD"))
print("$marker-err", file=sys.stderr)
sys.stdout.flush()
os.system("echo $marker-child")
PYEOF
  console_session() {  # console_session VALUE
    cat > s.yml <<EOF
name: svc
version: "0.3"
${PREDECESSOR:+predecessor: $PREDECESSOR}
security:
  attestation:
    tolerate: [sim, debug-mode]
services:
  - name: app
    mrenclaves: [$(measure $PY)]
    command: python3 $work/console_app.py
    environment:
      SCONE_CONSOLE_SHIELD: $1
    pwd: $work
EOF
  }
  session_hash() { "$scone" session show svc 2>&1 >/dev/null | sed -n 's/.*hash //p'; }
  console_session protected
  "$scone" session create s.yml >/dev/null
  SCONE_CONSOLE_SHIELD=disabled "$scone" run --config-id svc/app -- "$PY" > out.txt 2> err.txt ||
    { cat err.txt; fail "the service did not run"; }
  [[ -s out.txt && -s err.txt ]] || fail "nothing captured"
  ! grep -a -q "$marker" out.txt err.txt || fail "the marker in plaintext on the captured console (the host's value used?)"
  "$scone" console decrypt --session svc --service app out.txt > dec.out 2> dec.err ||
    { cat dec.err; fail "the owner's decrypt failed"; }
  grep -q "^$marker protected$" dec.out || { cat dec.out; fail "stdout not recovered"; }
  grep -q "^$marker-child$" dec.out || { cat dec.out; fail "the child's stdout not recovered"; }
  "$scone" console decrypt --session svc --service app err.txt 2>/dev/null | grep -q "^$marker-err$" ||
    fail "stderr not recovered"
  # Another client (another identity) is refused, and gets nothing.
  if XDG_STATE_HOME="$work/mallory" "$scone" console decrypt --session svc --service app \
       --cas "$(cat "$cas_dir/address")" --cas-cert "$cas_dir/cas.crt" out.txt > mallory.out 2> mallory.err; then
    fail "another client decrypted the console"
  fi
  grep -q "HTTP 403" mallory.err || { cat mallory.err; fail "no 403 for another client"; }
  ! grep -q "$marker" mallory.out || fail "another client got the plaintext"
  # A damaged console is reported with the session's key too.
  head -c -5 out.txt > cut.txt
  rc=0; "$scone" console decrypt --session svc --service app cut.txt > /dev/null 2> cut.err || rc=$?
  [[ $rc == 3 ]] && grep -q "cut short" cut.err || { cat cut.err; fail "a cut console not reported"; }
  # Opt-out: disabled in the session, protected on the host: the console is the program's.
  PREDECESSOR=$(session_hash) console_session disabled
  "$scone" session update s.yml >/dev/null
  SCONE_CONSOLE_SHIELD=protected "$scone" run --config-id svc/app -- "$PY" > plain.txt 2>/dev/null ||
    fail "the opted-out service did not run"
  grep -q "^$marker disabled$" plain.txt || { cat plain.txt; fail "the opted-out service's console is not its own"; }
  # A value that is neither is refused when the session is made.
  PREDECESSOR=$(session_hash) console_session yes
  if "$scone" session update s.yml > /dev/null 2> bad.err; then fail "SCONE_CONSOLE_SHIELD=yes accepted"; fi
  grep -q "SCONE_CONSOLE_SHIELD: 'yes' is not one of disabled, protected" bad.err || { cat bad.err; fail "no reason given"; }
  ;;
exec-keeps-reporting)
  # An entrypoint script that execs the real program, as container images do: the program it
  # executes keeps the volume and reports its state, so a rollback is still caught.
  printf '#!/bin/sh\nexec %s %s/app.py "$@"\n' "$PY" "$work" > start.sh
  session s.yml "    mrenclaves: [$(measure /bin/sh)]"
  sed -i "s|command: python3 $work/app.py|command: /bin/sh $work/start.sh|" s.yml
  "$scone" session create s.yml >/dev/null
  PROGRAM=/bin/sh run_app > out.txt 2> err.txt || { cat err.txt; fail "first run"; }
  grep -q "^runs 1$" out.txt || { cat out.txt; fail "the executed program lost the volume"; }
  cp -a data data.old
  PROGRAM=/bin/sh run_app > out.txt 2>&1 && grep -q "^runs 2$" out.txt || { cat out.txt; fail "second run"; }
  rm -rf data && cp -a data.old data
  PROGRAM=/bin/sh expect_refused "rolled back to an older copy"
  ;;
children-command-line)
  # A service's children: an entry script that runs the program as a child and then execs it
  # with CAS's arguments ("$@" holds the token) and environment (TOKEN_CHECK holds it). Each gets
  # them whole, and neither's /proc/PID/cmdline or environ (the host's view) holds the token.
  # Before (hostile finding), only the first process kept them out of the host's view: every
  # program it executed had the session's secrets in both.
  # Also, as natively: a variable of the loader's name space that the loader does not read stays
  # out of the kernel's copy too; `env -i` gives an empty environment; an argument the kernel
  # would refuse fails the exec with E2BIG (not the child, exit 126).
  cat > start.sh <<SHEOF
#!/bin/sh
export LD_SECRET="x-\$2"
$PY $work/app.py "\$@"
echo "env-i [\$(env -i /usr/bin/env | tr '\\n' ' ')]"
$PY -c '
import os
try:
    os.execv("/bin/true", ["true", "a" * 200000])
except OSError as e:
    print("exec-error", e.errno)'
exec $PY $work/app.py "\$@" host-arg-of-script
SHEOF
  session s.yml "    mrenclaves: [$(measure /bin/sh)]"
  sed -i "s|command: python3 $work/app.py|command: /bin/sh $work/start.sh|" s.yml
  "$scone" session create s.yml >/dev/null
  PROGRAM=/bin/sh run_app > out.txt 2> err.txt || { cat out.txt err.txt; fail "the entry script's service failed"; }
  [[ $(grep -c "^argv --token [A-Za-z0-9]\{24\}$" out.txt) == 1 ]] || { cat out.txt; fail "the child did not get CAS's arguments whole"; }
  [[ $(grep -c "^argv --token [A-Za-z0-9]\{24\} host-arg-of-script$" out.txt) == 1 ]] ||
    { cat out.txt; fail "the executed program did not get its arguments whole"; }
  [[ $(grep -c "^env hello-[A-Za-z0-9]\{24\} host-env absent$" out.txt) == 2 ]] || { cat out.txt; fail "the environment did not reach both"; }
  ! grep -q "LEAK" out.txt || { cat out.txt; fail "a child's /proc view holds the session's secret"; }
  grep -q "^env-i \[\]$" out.txt || { cat out.txt; fail "env -i did not give an empty environment"; }
  grep -q "^exec-error 7$" out.txt || { cat out.txt; fail "an argument too long for the kernel did not fail the exec with E2BIG"; }
  ;;
sync-reported)
  # The state after an fsync reaches CAS while the service runs: a crash that skips the report
  # at exit does not reopen the door to a rollback.
  session s.yml "    mrenclaves: [$(measure $PY)]"
  cat > sync_app.py <<EOF
import os, time
with open("$work/data/counter.txt", "a") as f:
    f.write("run\n")
    f.flush()
    os.fsync(f.fileno())
time.sleep(600)  # killed by the test once CAS knows the synced state
EOF
  sed -i "s|command: python3 $work/app.py|command: python3 $work/sync_app.py|" s.yml
  "$scone" session create s.yml >/dev/null
  generation() { sqlite3 "$cas_dir/cas.db" "select ifnull(max(generation), 0) from volumes where name='data'"; }
  # wait_for_generation N: until CAS knows a generation above N (bounded: 10 s).
  wait_for_generation() {
    for _ in $(seq 1 200); do (( $(generation) > $1 )) && return 0; sleep 0.05; done
    fail "no state above generation $1 reported to CAS after fsync"
  }
  run_app_in_background > /dev/null 2>&1 &
  svc_pid=$!
  wait_for_generation 0
  first=$(generation)
  kill -9 "$svc_pid"; wait "$svc_pid" 2>/dev/null || true; svc_pid=""
  cp -a data data.old
  run_app_in_background > /dev/null 2>&1 &
  svc_pid=$!
  wait_for_generation "$first"
  kill -9 "$svc_pid"; wait "$svc_pid" 2>/dev/null || true; svc_pid=""
  rm -rf data && cp -a data.old data
  expect_refused "rolled back to an older copy"
  ;;
crash-survived)
  session s.yml "    mrenclaves: [$(measure $PY)]"
  "$scone" session create s.yml >/dev/null
  run_app > /dev/null 2>&1 || fail "first run"
  # Killed after a commit it never reported: the newer state is accepted at the next start.
  cat > crash.py <<EOF
import os
with open("$work/data/counter.txt", "a") as f:
    f.write("run\n")
os.kill(os.getpid(), 9)
EOF
  sed "s|command: python3 $work/app.py|command: python3 $work/crash.py|" s.yml > crash.yml
  sed -i "s/^name: svc/name: svc/" crash.yml
  hash=$("$scone" session show svc 2>&1 >/dev/null | awk '{print $NF}')
  sed -i "s/^version: \"0.3\"/version: \"0.3\"\npredecessor: $hash/" crash.yml
  "$scone" session update crash.yml >/dev/null
  set +e; run_app > /dev/null 2>&1; set -e
  sed -i "s|command: python3 $work/crash.py|command: python3 $work/app.py|; s/^predecessor: .*/predecessor: $("$scone" session show svc 2>&1 >/dev/null | awk '{print $NF}')/" crash.yml
  "$scone" session update crash.yml >/dev/null
  run_app > out.txt 2> err.txt || { cat err.txt; fail "the state after a crash was refused"; }
  grep -q "^runs 3$" out.txt || { cat out.txt; fail "the write before the crash was lost"; }
  ;;
seeded-secret)
  # Another client's create that fails after its secrets would have been made must leave none
  # behind: once, it fixed the token of the session created next under that name (1 character).
  "$scone" session list > /dev/null  # starts the local CAS
  cat > seed.yml <<EOF
name: svc
version: "0.3"
services:
  - name: app
    mrenclaves: [$(measure $PY)]
secrets:
  - name: token
    kind: ascii
    size: 1
  - name: bad_ca
    kind: x509-ca
    value: "not a certificate"
  - name: bad
    kind: x509
    issuer: bad_ca
EOF
  if XDG_STATE_HOME="$work/mallory" "$scone" session create seed.yml --cas "$(cat "$cas_dir/address")" \
       --cas-cert "$cas_dir/cas.crt" 2> err.txt; then
    fail "the seeding session was created"
  fi
  grep -q "HTTP 4" err.txt || { cat err.txt; fail "no 4xx for the seeding session"; }
  session s.yml "    mrenclaves: [$(measure $PY)]"
  "$scone" session create s.yml > /dev/null
  run_app > out.txt 2> err.txt || { cat err.txt; fail "the service did not run"; }
  token=$(sed -n 's/^argv --token \(.*\)$/\1/p' out.txt)
  [[ ${#token} == 24 ]] || fail "the token is '${token}' (${#token} characters), not 24: seeded by a failed create"
  ;;
slow-connections)
  # 80 connections on each port, each from its own address, dribbling a byte every half second
  # (a TLS ClientHello on the REST port, a nonce request on the attestation port): an honest
  # attestation and an API call go through meanwhile. They must not wait for the connection
  # deadline (10 s) to free a thread: when they are done, CAS still holds every slow connection.
  # If the deadline passed before they were done (a loaded machine: CAS then rightly ended some),
  # the round tells nothing and runs again; three such rounds fail the case.
  session s.yml "    mrenclaves: [$(measure $PY)]"
  "$scone" session create s.yml > /dev/null
  rest_port=$(sed 's/.*://' "$cas_dir/address")
  attestation_port=$(sed 's/.*://' "$cas_dir/attestation")
  for round in 1 2 3; do
    # A file per round: the last round's "ready" must not pass for this one's (its signal
    # would then come before the handler and end the client without a report).
    slow=slow.$round.txt
    python3 "$(dirname "$0")/hostile_client.py" slow 127.0.0.1 "$rest_port" "$attestation_port" 80 > "$slow" 2>&1 &
    svc_pid=$!
    wait_for_line "$slow" "^ready" "$svc_pid"
    run_app > out.txt 2> err.txt || { cat err.txt; fail "the service did not run during the slow connections"; }
    "$scone" session list | grep -q "^svc$" || fail "the API call failed during the slow connections"
    kill -USR1 "$svc_pid"
    wait "$svc_pid" 2>/dev/null || true; svc_pid=""
    grep -q "^open 160$" "$slow" && break
    age=$(sed -n 's/^age //p' "$slow")
    ((age >= 10)) || { cat "$slow"; fail "CAS ended slow connections before their deadline"; }
    ((round < 3)) || { cat "$slow"; fail "honest requests waited for slow connections to end (in three rounds)"; }
    echo "round $round: the deadline passed before the honest requests were done; again"
  done
  echo "attestation and API call done with 160 slow connections open throughout (round $round)"
  grep -q "^runs $round$" out.txt || { cat out.txt; fail "the service did not get its volume"; }
  ;;
restored-database)
  # An older copy of CAS's database, put back while CAS is stopped, would undo the rollback
  # protection of volumes: CAS refuses it until an operator recovers it, on the record.
  session s.yml "    mrenclaves: [$(measure $PY)]"
  "$scone" session create s.yml >/dev/null
  run_app > /dev/null 2>&1 || fail "first run"
  "$scone" cas stop
  mkdir old && cp -a "$cas_dir"/cas.db* old/
  run_app > /dev/null 2>&1 || fail "second run"
  "$scone" cas stop
  rm -f "$cas_dir"/cas.db* && cp -a old/cas.db* "$cas_dir"/
  if "$scone" cas start > /dev/null 2>&1; then fail "CAS served a rolled-back database"; fi
  grep -q "older than it should be" "$cas_dir/log" || { cat "$cas_dir/log"; fail "no reason in CAS's log"; }
  grep -q "scone cas recover" "$cas_dir/log" || fail "the refusal does not name the recovery"
  "$scone" cas recover --state "$cas_dir" --las "$XDG_STATE_HOME/scone/las/las.sock" \
    --reason "restored from backup after disk loss" > rec.txt || fail "recovery failed"
  grep -q "older than it should be" rec.txt || { cat rec.txt; fail "recovery did not report the rollback"; }
  "$scone" cas start > /dev/null || fail "CAS did not start after recovery"
  "$scone" cas stop
  sqlite3 "$cas_dir/cas.db" "select actor, result from audit where action='recover'" | grep -q "restored from backup" \
    || fail "no audit record of the recovery"
  ;;
inserted-platform)
  # A row added to `platforms` would make CAS trust an attacker's platform key.
  session s.yml "    mrenclaves: [$(measure $PY)]"
  "$scone" session create s.yml >/dev/null
  start_other_las
  rogue=$("$scone" las platform-key --state other-las)
  "$scone" cas stop
  sqlite3 "$cas_dir/cas.db" "insert into platforms(key, added_by, time) values('$rogue', 'root', 0)"
  if "$scone" cas start > /dev/null 2>&1; then fail "CAS served a database with an inserted platform"; fi
  grep -q "platforms row '$rogue' has no MAC" "$cas_dir/log" || { cat "$cas_dir/log"; fail "no reason in CAS's log"; }
  # A MAC copied from a genuine row does not make it genuine.
  sqlite3 "$cas_dir/cas.db" "update platforms set mac=(select mac from platforms where key!='$rogue') where key='$rogue'"
  if "$scone" cas start > /dev/null 2>&1; then fail "CAS served a database with a forged platform row"; fi
  "$scone" cas recover --state "$cas_dir" --las "$XDG_STATE_HOME/scone/las/las.sock" --reason "rogue row" > rec.txt
  grep -q "dropped platforms row '$rogue'" rec.txt || { cat rec.txt; fail "recovery kept the rogue row"; }
  "$scone" cas start > /dev/null
  run_on_other_las
  ;;
released-secrets-wiped)
  # After CAS released a service's secrets, no copy of them stays in CAS's memory.
  session s.yml "    mrenclaves: [$(measure $PY)]"
  "$scone" session create s.yml >/dev/null
  run_app > out.txt 2> err.txt || { cat err.txt; fail "the service did not run"; }
  token=$(sed -n 's/^argv --token \(.*\)$/\1/p' out.txt)
  [[ ${#token} == 24 ]] || fail "no token"
  cat > scan.py <<'PYEOF'
import sys
pid, needle = sys.argv[1], sys.argv[2].encode()
found = 0
with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
    for line in maps:
        fields = line.split()
        if "r" not in fields[1] or (len(fields) > 5 and fields[5].startswith("/")):
            continue  # mapped files hold code and constants, not what CAS computed
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if end - start > 4 << 30:
            continue  # reserved, not used: a sanitizer's shadow memory
        chunk, keep = 16 << 20, len(needle) - 1
        at, tail = start, b""
        while at < end:
            try:
                mem.seek(at)
                data = tail + mem.read(min(chunk, end - at))
            except (OSError, ValueError, OverflowError):
                break
            found += data.count(needle)
            tail = data[-keep:]
            at += chunk
print(found)
PYEOF
  found=$(python3 scan.py "$(cat "$cas_dir/pid")" "$token")
  [[ "$found" == 0 ]] || fail "the released token is still in CAS's memory ($found copies)"
  ;;
*) fail "unknown case $case_name" ;;
esac
echo "ok: $case_name"
