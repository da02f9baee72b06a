#!/usr/bin/env bash
# SCONE's stack files on a single-node Docker Swarm: a secure python web service that gets a
# secret from CAS and counts visits in a secure redis over the network shield, and a standard
# helper (not_scone) that cannot talk plaintext to redis. CAS and LAS run on this host (started by
# `scone stack deploy`). Also: bad stack files and an unshieldable image refused before anything
# is deployed; an image with a one-byte change never serves; `scone stack rm` leaves nothing.
# usage: stack_test.sh SCONE CASE
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib.sh"
source "$here/lib.sh"
scone="$1"
case_name="$2"
work="$(mktemp -d)"
export XDG_STATE_HOME="$work/state"
stack="sconetest$$"
cleanup() {
  "$scone" stack rm "$stack" --quiet > /dev/null 2>&1 || docker stack rm "$stack" > /dev/null 2>&1 || true
  docker volume ls -q --filter "label=com.docker.stack.namespace=$stack" | xargs -r "$DOCKER" volume rm -f > /dev/null 2>&1 || true
  docker image ls -q --filter "label=scone.stack=$stack" | xargs -r "$DOCKER" image rm -f > /dev/null 2>&1 || true
  docker image rm -f "$stack-static" > /dev/null 2>&1 || true
  "$scone" cas stop > /dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
swarm_ready "$scone"

# poll SECONDS COMMAND...: until COMMAND succeeds (bounded), else fails.
poll() {
  local seconds="$1"; shift
  local end=$((SECONDS + seconds))
  until "$@"; do
    ((SECONDS < end)) || return 1
    sleep 0.5
  done
}
# Nothing of the stack is deployed: no service, container, network or image made for it.
nothing_deployed() {
  local what
  for what in "service ls -q" "ps -a -q" "network ls -q"; do
    # shellcheck disable=SC2086
    [[ -z "$(docker $what --filter "label=com.docker.stack.namespace=$stack")" ]] || fail "$1: a $what of the stack exists"
  done
  [[ -z "$(docker image ls -q --filter "label=scone.stack=$stack")" ]] || fail "$1: an image was made for the stack"
}

secret="stack-tok-$(head -c 12 /dev/urandom | xxd -p)"
cat > app.py <<'PY'
import hashlib, http.server, os, socket

TOKEN = os.environ["API_TOKEN"]

def incr():
    # RESP by hand: Debian's python3 has no redis module. The network shield makes it TLS.
    with socket.create_connection(("redis", 6379), timeout=10) as s:
        s.sendall(b"*2\r\n$4\r\nINCR\r\n$6\r\nvisits\r\n")
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(64)
            if not chunk:
                break
            data += chunk
    return int(data[1:].strip())

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("visits %d token-sha %s\n" % (incr(), hashlib.sha256(TOKEN.encode()).hexdigest())).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
PY
port=$((18000 + $$ % 1000))
cat > stack.yml <<STACKFILE
version: "3.8"
services:
  web:
    image: scone-native/python
    command: python3 /app/app.py
    environment:
      API_TOKEN: \$api_token
    ports:
      - "$port:8000"
    configs:
      - source: app
        target: /app/app.py
  redis:
    image: scone-native/redis
    volumes:
      - redis-data:/data
  helper:
    image: scone-native/redis
    not_scone: "true"
    command: sleep infinity
secrets:
  api_token:
    kind: ascii
    value: "$secret"
configs:
  app:
    file: app.py
volumes:
  redis-data:
STACKFILE

case "$case_name" in
stack)
  # Bad input: each refused with FILE:LINE before anything is built or deployed.
  bad() {  # bad NAME PATTERN: stack file NAME.yml refused, its error matching PATTERN
    if "$scone" stack deploy --quiet -c "$1.yml" "$stack" > out.txt 2> err.txt; then fail "$1.yml was deployed"; fi
    grep -q -- "$2" err.txt || { cat err.txt; fail "$1.yml: the error does not say '$2'"; }
    nothing_deployed "$1.yml"
  }
  sed 's/^    not_scone: "true"/    not_scone: "true"\n    network_shieldd: disabled/' stack.yml > unknown-key.yml
  bad unknown-key "unknown-key.yml:20: unknown key 'network_shieldd' in service helper"
  sed 's/\$api_token/$api_tokn/' stack.yml > undefined.yml
  bad undefined "undefined.yml:7: environment API_TOKEN: undefined secret 'api_tokn'"
  sed '/^    kind: ascii/d' stack.yml > no-kind.yml
  bad no-kind "no-kind.yml:22: secret api_token has no kind"
  sed 's/command: sleep infinity/command: echo $api_token/' stack.yml > standard-secret.yml
  bad standard-secret "standard-secret.yml:20: \$api_token: service helper is not_scone"
  # An image the runtime cannot enter (a static program): refused by sconify, with its line.
  [[ -x /bin/busybox ]] || apt-get install -y -qq -o DPkg::Lock::Timeout=600 busybox-static > /dev/null
  mkdir -p static && cp /bin/busybox static/busybox
  tar -C static -c . | docker import --change 'CMD ["/busybox", "sleep", "1000"]' - "$stack-static" > /dev/null
  sed "s|^    image: scone-native/python|    image: $stack-static|; s|^    command: python3 /app/app.py|    command: /busybox sleep 1000|" \
    stack.yml > static.yml
  bad static "static.yml:4: service web: .*statically linked"
  # An image that does not exist: named once, at its line (it said "service web: service web").
  sed "s|^    image: scone-native/python|    image: $stack-nope|" stack.yml > missing-image.yml
  bad missing-image "missing-image.yml:4: service web: image $stack-nope does not exist"

  # A deploy that fails halfway (Docker refuses the helper's spec after the images were made):
  # rolled back, nothing left on Docker's side and no session on CAS.
  sed 's/^    command: sleep infinity/    command: sleep infinity\n    deploy:\n      mode: bogus/' stack.yml > half.yml
  if "$scone" stack deploy --quiet -c half.yml "$stack" > out.txt 2> err.txt; then fail "half.yml was deployed"; fi
  grep -q "rolled back" err.txt || { cat err.txt; fail "the failed deploy does not say it rolled back"; }
  nothing_deployed "the failed deploy"
  if "$scone" session show "$stack" > /dev/null 2>&1; then fail "the failed deploy left a session on CAS"; fi

  # The stack, deployed.
  "$scone" stack deploy -c stack.yml "$stack" > deploy.txt 2> deploy_err.txt || { cat deploy.txt deploy_err.txt; fail "deploy failed"; }
  grep -q "deployed stack $stack: 3 services (2 secure)" deploy.txt || { cat deploy.txt; fail "no deploy summary"; }
  # In a script (stderr not a terminal): no progress lines.
  ! grep -q '^\[[0-9]*/[0-9]*\] ' deploy_err.txt || { cat deploy_err.txt; fail "progress lines in a script"; }
  "$scone" stack ca "$stack" > ca.pem
  grep -q "BEGIN CERTIFICATE" ca.pem || fail "scone stack ca printed no certificate"
  get() { curl -sS --max-time 10 --cacert ca.pem "https://127.0.0.1:$port/" > "$1" 2> curl_err.txt; }
  if ! poll 240 get first.txt; then
    docker service ps --no-trunc "${stack}_web" "${stack}_redis" >&2 || true
    docker service logs --raw "${stack}_web" 2>&1 | tail -20 >&2 || true
    cat curl_err.txt >&2
    fail "the web service does not serve HTTPS verified with the session CA"
  fi
  want=$(printf '%s' "$secret" | sha256sum | cut -d' ' -f1)
  grep -q "token-sha $want" first.txt || { cat first.txt; fail "the web service did not get its secret from CAS"; }
  get second.txt || fail "second request failed"
  n1=$(awk '{print $2}' first.txt); n2=$(awk '{print $2}' second.txt)
  [[ "$n2" == $((n1 + 1)) ]] || fail "visits did not increment through redis ($n1 then $n2)"
  # What web printed (its request log, on stderr) reaches `docker service logs` as the console
  # shield's records, which the session's owner decrypts (binary records on a pipe did not survive
  # Docker's log driver, which stores lines as UTF-8: helper's finding). The service still runs:
  # its streams have no final record yet, which decrypt reports; nothing may fail authentication.
  web_log() {
    docker service logs --raw "${stack}_web" > web-logs.txt 2>&1
    "$scone" console decrypt --session "$stack" --service web web-logs.txt > web-plain.txt 2> decrypt_err.txt || true
    grep -a -q '"GET / HTTP/1.1" 200' web-plain.txt
  }
  poll 60 web_log || { head -c 600 web-logs.txt; cat decrypt_err.txt; fail "web's log from docker service logs does not decrypt"; }
  ! grep -q "authentication failed" decrypt_err.txt || { cat decrypt_err.txt; fail "web's log from docker service logs is damaged"; }
  ! grep -a -q '"GET / HTTP/1.1"' web-logs.txt || fail "web's request log is plaintext in docker service logs"
  # Deployed again: the images are reused (same ids), the session updated in place.
  ids() { docker image ls -q --no-trunc --filter "label=scone.stack=$stack" | sort; }
  ids > ids-before.txt
  "$scone" stack deploy --quiet -c stack.yml "$stack" > redeploy.txt || fail "the second deploy failed"
  ids > ids-after.txt
  [[ -s ids-before.txt ]] && cmp -s ids-before.txt ids-after.txt || fail "the second deploy did not reuse the images"
  "$scone" session show "$stack" 2>&1 | grep -q "^predecessor: [0-9a-f]\{64\}" || fail "the session was not updated with a predecessor"
  poll 120 get third.txt || fail "the web service does not serve after the second deploy"
  # Plain HTTP on the published port gets no page: the network shield serves TLS only.
  if curl -sS --max-time 5 "http://127.0.0.1:$port/" 2>/dev/null | grep -q visits; then fail "the web service answered plaintext"; fi
  # Without the session CA, curl cannot verify the service.
  if curl -sS --max-time 5 "https://127.0.0.1:$port/" > /dev/null 2>&1; then fail "verified without the session CA"; fi

  # The helper reaches redis over TCP but gets no PONG in plaintext (mutual TLS, session CA).
  poll 60 test -n "$(docker ps -q --filter "label=com.docker.swarm.service.name=${stack}_helper")" || fail "no helper container"
  helper=$(docker ps -q --filter "label=com.docker.swarm.service.name=${stack}_helper" | head -1)
  docker exec "$helper" timeout 5 bash -c 'exec 3<>/dev/tcp/redis/6379' || fail "the helper cannot reach redis at all (no control)"
  pong=$(docker exec "$helper" timeout 5 redis-cli -h redis -p 6379 PING 2>&1 || true)
  if grep -q PONG <<< "$pong"; then fail "the helper talked plaintext to redis: $pong"; fi

  # The secret is nowhere Docker keeps things: specs, containers, logs, the translated file, images.
  "$scone" cas split stack.yml --stack "$stack" --out split --quiet > /dev/null
  grep -q "SCONE_CONFIG_ID: \"$stack/web\"" "split/$stack-stack.yml" || { cat "split/$stack-stack.yml"; fail "cas split wrote no stack file"; }
  grep -q "mrenclaves" "split/$stack-session.yml" || fail "cas split wrote no session"
  services=$(docker service ls -q --filter "label=com.docker.stack.namespace=$stack")
  containers=$(docker ps -a -q --filter "label=com.docker.stack.namespace=$stack")
  # shellcheck disable=SC2086
  docker service inspect $services > inspect-services.json
  # shellcheck disable=SC2086
  docker inspect $containers > inspect-containers.json
  for s in web redis helper; do docker service logs --raw "${stack}_$s" >> logs.txt 2>&1; done
  docker save "scone-stack/$stack-web" "scone-stack/$stack-redis" -o images.tar
  for f in inspect-services.json inspect-containers.json logs.txt "split/$stack-stack.yml" images.tar; do
    if grep -a -q -- "$secret" "$f"; then fail "the secret is in $f"; fi
  done
  grep -q "SCONE_CAS_KEY_HASH" inspect-services.json || fail "the inspect output is not what was searched"
  if grep -r -a -l -- "$secret" /var/lib/docker 2>/dev/null | head -1 | grep -q .; then
    fail "the secret is in /var/lib/docker"
  fi

  # python3 changed by one byte in a layer on top of the stack's image: never serves, log says why.
  cid=$(docker create "scone-stack/$stack-web")
  docker cp "$cid:/usr/bin/python3.11" python3.11 && docker rm -v "$cid" > /dev/null
  printf 'x' >> python3.11
  mkdir -p modified && mv python3.11 modified/
  printf 'FROM scone-stack/%s-web\nCOPY python3.11 /usr/bin/python3.11\n' "$stack" > modified/Dockerfile
  docker build -q -t "scone-stack/$stack-modified" modified > /dev/null
  docker service update --detach --no-resolve-image --image "scone-stack/$stack-modified" "${stack}_web" > /dev/null
  refused() { docker service ps --no-trunc --format '{{.Image}} {{.Error}}' "${stack}_web" | grep -q "modified.*exit (126)"; }
  poll 120 refused || { docker service ps --no-trunc "${stack}_web" >&2; fail "the modified image did not exit 126"; }
  docker service logs --raw "${stack}_web" 2>&1 | grep -a "scone:" | grep -a -q "is not one the policy names" \
    || { docker service logs --raw "${stack}_web" 2>&1 | tail >&2; fail "its log does not say why"; }
  if get modified.txt; then fail "the modified image served"; fi

  # scone stack rm --keep-data: services and images go; the volume and the session (the
  # volume's key) stay for a later deploy.
  "$scone" stack rm "$stack" --keep-data --quiet > rm.txt || fail "scone stack rm --keep-data failed"
  grep -q "its volumes and session kept" rm.txt || { cat rm.txt; fail "rm --keep-data output"; }
  nothing_deployed "after scone stack rm --keep-data"
  [[ -n "$(docker volume ls -q --filter "label=com.docker.stack.namespace=$stack")" ]] || fail "--keep-data removed the volume"
  "$scone" session show "$stack" > /dev/null 2>&1 || fail "--keep-data removed the session"
  # scone stack rm: no service, container, network, image, volume or session of the stack left.
  "$scone" stack rm "$stack" --quiet > rm.txt || fail "scone stack rm failed"
  nothing_deployed "after scone stack rm"
  [[ -z "$(docker volume ls -q --filter "label=com.docker.stack.namespace=$stack")" ]] || fail "a volume of the stack is left"
  if "$scone" session show "$stack" > /dev/null 2> show_err.txt; then fail "the stack's session is left on CAS"; fi
  grep -q "HTTP 404" show_err.txt || { cat show_err.txt; fail "unexpected error for the removed session"; }
  # Once more (or a typo in the name): nothing there, said so, as docker stack rm does.
  "$scone" stack rm "$stack" --quiet > rm.txt || fail "scone stack rm of a removed stack failed"
  grep -q "^nothing found in stack $stack$" rm.txt || { cat rm.txt; fail "scone stack rm of a removed stack said it removed it"; }
  ;;
*) fail "unknown case $case_name" ;;
esac
echo "ok: docker.$case_name"
