#!/usr/bin/env bash
# Secure images with the real Docker engine: curated images built here from Debian's packages,
# `scone image sconify`, containers that attest to the local CAS through the host's LAS, volumes
# whose host side holds only ciphertext, images refused before anything is built.
# usage: image_test.sh SCONE CASE
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib.sh"
source "$here/lib.sh"
scone="$1"
case_name="$2"
work="$(mktemp -d)"
export XDG_STATE_HOME="$work/state"
tag="scone-test-$$"  # names of this case's images and containers
containers=()
volumes=()
cleanup() {
  remove_containers "${containers[@]}"
  for v in "${volumes[@]}"; do docker volume rm -f "$v" > /dev/null 2>&1 || true; done
  docker image ls --format '{{.Repository}}' | grep "^$tag" | xargs -r "$DOCKER" image rm -f >/dev/null 2>&1 || true
  "$scone" cas stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
docker_ready "$scone"

# The local CAS and LAS of this case; the containers reach CAS on the host's network and LAS
# through its socket, bind-mounted (LAS measures them through /proc, in their own namespace).
start_cas() {
  "$scone" cas start > /dev/null
  cas_dir="$XDG_STATE_HOME/scone/cas"
  las_socket="$XDG_STATE_HOME/scone/las/las.sock"
  cas_addr="$(cat "$cas_dir/attestation")"
  cas_key_hash="$(openssl x509 -in "$cas_dir/cas.crt" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1)"
}
# run_secure NAME IMAGE [docker run options...]: runs IMAGE attached as container NAME.
run_secure() {
  local name="$1" image="$2"; shift 2
  containers+=("$name")
  docker run --name "$name" --network host -v "$las_socket:/var/run/scone/las.sock" \
    -e SCONE_CAS_ADDR="$cas_addr" -e SCONE_CAS_KEY_HASH="$cas_key_hash" "$@" "$image"
}
# build_image TAG DOCKERFILE_TEXT [FILES...]: a build context of its own (never the case's
# directory, which holds CAS's state).
build_image() {
  local image="$1" text="$2"; shift 2
  local ctx
  ctx="$(mktemp -d -p "$work" ctx.XXXXXX)"
  (($#)) && cp -a "$@" "$ctx/"
  printf '%s\n' "$text" > "$ctx/Dockerfile"
  docker build -q -t "$image" "$ctx" > /dev/null
}
measurement_of() { grep -o '[0-9a-f]\{64\}' "$1" | head -1; }
# volume_dir CONTAINER PATH: where the engine keeps the volume mounted at PATH.
volume_dir() { docker inspect -f "{{range .Mounts}}{{if eq .Destination \"$2\"}}{{.Source}}{{end}}{{end}}" "$1"; }

# python_session FILE MEASUREMENT SCRIPT: a session for scone-curated/python that runs SCRIPT
# (served from CAS as an injected file) with a given secret in its environment.
python_session() {
  local file="$1" measurement="$2" script="$3"
  {
    cat <<EOF
name: ${SESSION:-python}
version: "0.3"
security:
  attestation:
    tolerate: [sim, debug-mode]
volumes:
  - name: data
services:
  - name: python
    mrenclaves: [$measurement]
    command: python3 /app/app.py
    environment:
      PATH: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
      API_TOKEN: \$\$SCONE::api_token\$\$
    pwd: /
    image_name: python
images:
  - name: python
    volumes:
      - name: data
        path: /data
    injection_files:
      - path: /app/app.py
        content: |
EOF
    sed 's/^/          /' "$script"
    cat <<EOF
secrets:
  - name: api_token
    kind: ascii
    value: "$secret"
EOF
  } > "$file"
}
secret="tok-$(head -c 12 /dev/urandom | xxd -p)"
marker="plaintext-marker-$$-$(date +%N)"

case "$case_name" in
curated-images)
  # All four, native and curated; reused when present (other cases build python on first use).
  for name in python redis nginx sqlite; do
    curated_ready "$scone" "$name"
    docker image inspect "scone-native/$name" > /dev/null || fail "scone-native/$name missing"
    docker image inspect -f '{{index .Config.Labels "scone.measurement"}}' "scone-curated/$name" | grep -q '^[0-9a-f]\{64\}$' \
      || fail "scone-curated/$name carries no measurement"
    docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "scone-curated/$name" \
      | grep -q '^LD_PRELOAD=/opt/scone/lib/libscone-runtime.so$' || fail "scone-curated/$name does not preload the runtime"
  done
  "$scone" image curated list > list.txt
  for name in python redis nginx sqlite; do
    grep -q "^$name .*scone-native/$name .*scone-curated/$name " list.txt || { cat list.txt; fail "$name not listed"; }
  done
  if grep -q "not built" list.txt; then cat list.txt; fail "a built image is listed as not built"; fi
  # The native images are plain Debian 12 with the program.
  docker run --rm --entrypoint python3 scone-native/python -c 'print("py-ok")' | grep -q py-ok || fail "native python3"
  docker run --rm --entrypoint redis-server scone-native/redis --version | grep -q "Redis server v=7" || fail "native redis"
  docker run --rm --entrypoint cat scone-native/python /etc/debian_version | grep -q '^12\.' || fail "not Debian 12"
  # The example session: the curated image's measurement and its volume.
  curated_ready "$scone" python python.yml
  grep -q "mrenclaves: \[$(docker image inspect -f '{{index .Config.Labels "scone.measurement"}}' scone-curated/python)\]" python.yml \
    || { cat python.yml; fail "the example session does not name the image's measurement"; }
  grep -q "path: /data" python.yml || fail "the example session has no /data volume"
  # A name not in the catalogue.
  if "$scone" image curated build perl > out.txt 2> err.txt; then fail "an unknown curated image was built"; fi
  grep -q "no curated image 'perl' (there are: python, redis, nginx, sqlite)" err.txt || { cat err.txt; fail "unclear error"; }
  ;;

python-volume)
  # A script in the curated python image writes to its --fs-dir volume: the host side of the
  # volume holds ciphertext only; a second container reads the data back through the shield.
  curated_ready "$scone" python example.yml
  start_cas
  cat > app.py <<EOF
import os
path = "/data/notes.txt"
before = open(path).read() if os.path.exists(path) else ""
with open(path, "a") as f:
    f.write("$marker\n")
print("lines", open(path).read().count("$marker"), flush=True)
EOF
  python_session s.yml "$(measurement_of example.yml)" app.py
  "$scone" session create s.yml > /dev/null
  docker volume create "$tag-data" > /dev/null && volumes+=("$tag-data")
  run_secure "$tag-1" scone-curated/python -v "$tag-data:/data" > out1.txt 2> err1.txt \
    || { cat out1.txt err1.txt; fail "the secure python container failed"; }
  grep -q "^lines 1$" out1.txt || { cat out1.txt err1.txt; fail "the script did not write to the volume"; }
  host_dir="$(docker volume inspect -f '{{.Mountpoint}}' "$tag-data")"
  [[ -d "$host_dir/.scone" ]] || { ls -la "$host_dir"; fail "no SCONE volume on the host side"; }
  [[ -n "$(find "$host_dir" -type f -not -path '*/.scone/*')" ]] || fail "nothing written on the host side"
  if grep -r -a -q -- "$marker" "$host_dir"; then fail "plaintext on the volume's host side"; fi
  run_secure "$tag-2" scone-curated/python -v "$tag-data:/data" > out2.txt 2> err2.txt \
    || { cat out2.txt err2.txt; fail "the second container failed"; }
  grep -q "^lines 2$" out2.txt || { cat out2.txt err2.txt; fail "the second container did not read the first's data"; }
  # A fresh, empty volume in place of the one CAS knows: refused, never silently started anew.
  set +e
  run_secure "$tag-3" scone-curated/python > out3.txt 2> err3.txt
  rc=$?
  set -e
  [[ $rc == 126 && ! -s out3.txt ]] || { cat out3.txt err3.txt; fail "a replaced (empty) volume was accepted"; }
  grep -q "volume data at /data is missing, but CAS knows its state" err3.txt || { cat err3.txt; fail "no reason given"; }
  # The container's own anonymous volume (VOLUME /data), under a session of its own: no plaintext
  # there nor in the container's layer.
  SESSION=python2 python_session s2.yml "$(measurement_of example.yml)" app.py
  "$scone" session create s2.yml > /dev/null
  run_secure "$tag-4" scone-curated/python -e SCONE_CONFIG_ID=python2/python > out4.txt 2> err4.txt \
    || { cat out4.txt err4.txt; fail "run on the anonymous volume failed"; }
  grep -q "^lines 1$" out4.txt || { cat out4.txt err4.txt; fail "the script did not write to the anonymous volume"; }
  anon="$(volume_dir "$tag-4" /data)"
  layer="$(docker inspect -f '{{.GraphDriver.Data.UpperDir}}' "$tag-4")"
  [[ -d "$anon/.scone" ]] || fail "the anonymous volume is not a SCONE volume"
  if grep -r -a -q -- "$marker" "$anon" "$layer"; then fail "plaintext in the container's layer or volume"; fi
  ;;

attest-secret)
  # The sconified image attests to CAS and gets its secret; the secret is nowhere the host
  # keeps images, containers or logs; a one-byte change of python3 never runs.
  curated_ready "$scone" python example.yml
  start_cas
  cat > app.py <<'EOF'
import hashlib, os
token = os.environ.get("API_TOKEN", "")
print("token-sha", hashlib.sha256(token.encode()).hexdigest(), flush=True)
with open("/data/token.txt", "w") as f:
    f.write(token)
EOF
  python_session s.yml "$(measurement_of example.yml)" app.py
  "$scone" session create s.yml > /dev/null
  run_secure "$tag-ok" scone-curated/python > out.txt 2> err.txt || { cat out.txt err.txt; fail "attestation failed"; }
  want=$(printf '%s' "$secret" | sha256sum | cut -d' ' -f1)
  grep -q "^token-sha $want$" out.txt || { cat out.txt err.txt; fail "the service did not get its secret from CAS"; }
  # Nowhere on the host's side of Docker: inspect, logs, image layers, the volume, the engine's files.
  docker inspect "$tag-ok" scone-curated/python > inspect.json
  docker logs "$tag-ok" > logs.txt 2>&1
  docker save scone-curated/python -o image.tar
  for f in inspect.json logs.txt image.tar; do
    if grep -a -q -- "$secret" "$f"; then fail "the secret is in $f"; fi
  done
  if grep -r -a -l -- "$secret" /var/lib/docker 2>/dev/null | head -1 | grep -q .; then
    fail "the secret is in /var/lib/docker"
  fi
  # What sconify added to the native image: the runtime, nothing else (no key, no session).
  docker save scone-native/python -o native.tar
  python3 - image.tar native.tar > added.txt <<'EOF'
import hashlib, json, sys, tarfile
# Layers by content: the ones of the secure image that the native image does not have.
def layers(path):
    with tarfile.open(path) as t:
        names = json.load(t.extractfile("manifest.json"))[0]["Layers"]
        return [(n, hashlib.sha256(t.extractfile(n).read()).hexdigest()) for n in names]
native = {h for _, h in layers(sys.argv[2])}
with tarfile.open(sys.argv[1]) as t:
    for name, h in layers(sys.argv[1]):
        if h in native:
            continue
        with tarfile.open(fileobj=t.extractfile(name)) as l:
            for m in l.getmembers():
                print(m.name)
EOF
  grep -q '^opt/scone/lib/libscone-runtime.so$' added.txt || { cat added.txt; fail "the runtime was not added"; }
  if grep -v -E '^(opt|opt/scone|opt/scone/lib|opt/scone/lib/lib[A-Za-z0-9_-]+\.so[.0-9]*)/?$' added.txt; then
    fail "sconify added more than the runtime to the image"
  fi
  # python3 changed by one byte, in a layer on top: CAS refuses, python never starts.
  cid=$(docker create scone-curated/python)
  docker cp "$cid:/usr/bin/python3.11" python3.11 && docker rm -v "$cid" > /dev/null
  printf 'x' >> python3.11
  build_image "$tag-modified" $'FROM scone-curated/python\nCOPY python3.11 /usr/bin/python3.11' python3.11
  set +e
  run_secure "$tag-bad" "$tag-modified" > bad.txt 2> bad_err.txt
  rc=$?
  set -e
  [[ $rc == 126 ]] || { cat bad.txt bad_err.txt; fail "the modified image exited $rc, expected 126 (refused before main)"; }
  [[ ! -s bad.txt ]] || { cat bad.txt; fail "the modified python ran"; }
  grep -q "is not one the policy names" bad_err.txt || { cat bad_err.txt; fail "its log does not say why"; }
  docker logs "$tag-bad" 2>&1 | grep -q "is not one the policy names" || fail "docker logs do not say why"
  ;;

entry-script)
  # An image whose ENTRYPOINT is a shell script: the shell runs shielded, attested, and the
  # script's content comes from CAS (a script rewritten in a layer does not run).
  curated_ready "$scone" python
  start_cas
  cat > entry.sh <<'EOF'
#!/bin/sh
echo "entry-runs $1"
exec python3 -c 'import os; open("/data/from-entry", "w").write(os.environ["GREETING"]); print("python-wrote")'
EOF
  chmod +x entry.sh
  build_image "$tag-native" $'FROM scone-native/python\nCOPY entry.sh /entry.sh\nENTRYPOINT ["/entry.sh"]\nCMD ["first"]' entry.sh
  "$scone" image sconify --from "$tag-native" --to "$tag-secure" --fs-dir /data --service-name app --name entry \
    --env 'GREETING=hello-$$SCONE::greeting$$' --session-out s.yml --quiet
  [[ "$(stat -c %a s.yml)" == 600 ]] || fail "the session file is mode $(stat -c %a s.yml): it holds what --env gave"
  grep -q "path: /entry.sh" s.yml || { cat s.yml; fail "the entry script is not an injected file of the session"; }
  grep -q "command: /bin/sh /entry.sh first" s.yml || { cat s.yml; fail "the session's command is not the image's"; }
  grep -q "name: greeting" s.yml || { cat s.yml; fail "no placeholder for the referenced secret"; }
  "$scone" session create s.yml > /dev/null
  docker volume create "$tag-data" > /dev/null && volumes+=("$tag-data")
  run_secure "$tag-run" "$tag-secure" -v "$tag-data:/data" > out.txt 2> err.txt || { cat out.txt err.txt; fail "entry script failed"; }
  grep -q "^entry-runs first$" out.txt && grep -q "^python-wrote$" out.txt || { cat out.txt err.txt; fail "unexpected output"; }
  host_dir="$(docker volume inspect -f '{{.Mountpoint}}' "$tag-data")"
  if grep -r -a -q "hello-" "$host_dir"; then fail "what python wrote is plaintext on the host"; fi
  # The script rewritten in a layer on top: CAS's copy runs, not the layer's.
  printf '#!/bin/sh\necho TAMPERED\n' > evil.sh && chmod +x evil.sh
  build_image "$tag-tampered" "FROM $tag-secure"$'\nCOPY evil.sh /entry.sh' evil.sh
  run_secure "$tag-run2" "$tag-tampered" -v "$tag-data:/data" > out2.txt 2> err2.txt || { cat out2.txt err2.txt; fail "rerun failed"; }
  if grep -q TAMPERED out2.txt; then fail "the rewritten entry script ran"; fi
  grep -q "^entry-runs first$" out2.txt || { cat out2.txt err2.txt; fail "CAS's entry script did not run"; }
  ;;

redis)
  # The curated redis, secure: serves after attestation; what it saves (RDB, AOF) is ciphertext
  # on the volume's host side.
  curated_ready "$scone" redis
  start_cas
  port=$((20000 + $$ % 20000))
  cat > r.yml <<EOF
name: redis
version: "0.3"
security:
  attestation:
    tolerate: [sim, debug-mode]
volumes:
  - name: data
services:
  - name: redis
    mrenclaves: [$(docker image inspect -f '{{index .Config.Labels "scone.measurement"}}' scone-curated/redis)]
    command: redis-server --dir /data --port $port --protected-mode no --appendonly yes
    pwd: /
    image_name: redis
images:
  - name: redis
    volumes:
      - name: data
        path: /data
EOF
  "$scone" session create r.yml > /dev/null
  docker volume create "$tag-data" > /dev/null && volumes+=("$tag-data")
  run_secure "$tag-redis" scone-curated/redis -d -v "$tag-data:/data" > /dev/null
  for _ in $(seq 1 200); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
    [[ "$(docker inspect -f '{{.State.Running}}' "$tag-redis")" == true ]] || { docker logs "$tag-redis"; fail "redis exited"; }
    sleep 0.05
  done
  redis-cli -p "$port" set k "$marker" | grep -q OK || { docker logs "$tag-redis"; fail "redis does not serve"; }
  [[ "$(redis-cli -p "$port" get k)" == "$marker" ]] || fail "redis lost the value"
  redis-cli -p "$port" save | grep -q OK || fail "SAVE failed"
  host_dir="$(docker volume inspect -f '{{.Mountpoint}}' "$tag-data")"
  [[ -s "$host_dir/dump.rdb" && -d "$host_dir/.scone" ]] || { ls -laR "$host_dir"; fail "no protected dump.rdb"; }
  if grep -r -a -q -- "$marker" "$host_dir"; then fail "redis's data is plaintext on the host"; fi
  ;;
build)
  # scone build: a Dockerfile built into IMAGE-native, then sconified into IMAGE; the container
  # runs the image's own CMD shielded and attested, with a secret from CAS and an encrypted volume.
  curated_ready "$scone" python
  start_cas
  mkdir ctx
  cat > ctx/app.py <<EOF
import hashlib, os
print("greeting-sha", hashlib.sha256(os.environ["GREETING"].encode()).hexdigest(), flush=True)
open("/data/out.txt", "w").write("$marker")
print("wrote", open("/data/out.txt").read() == "$marker", flush=True)
EOF
  printf 'FROM scone-native/python\nCOPY app.py /app/app.py\nCMD ["python3", "/app/app.py"]\n' > ctx/Containerfile
  # Bad input first: nothing is built.
  if "$scone" build -t "$tag-app" --quiet ctx > out.txt 2> err.txt; then fail "built without a Dockerfile"; fi
  grep -q "no Dockerfile in the build context: ctx/Dockerfile" err.txt || { cat err.txt; fail "unclear error"; }
  if docker image inspect "$tag-app-native" > /dev/null 2>&1; then fail "an image was built although refused"; fi
  # On a terminal (script's pty) the steps are named; in scripts they are not.
  build=("$scone" build -f ctx/Containerfile -t "$tag-app" --fs-dir /data --name build-test
    --env 'GREETING=$$SCONE::greeting$$' --session-out s.yml ctx)
  script -qec "$(printf '%q ' "${build[@]}")" /dev/null > tty.txt || { cat tty.txt; fail "scone build failed"; }
  grep -q "building $tag-app-native from ctx/Containerfile" tty.txt || { cat tty.txt; fail "no progress line on a terminal"; }
  docker image inspect "$tag-app-native" > /dev/null || fail "the native image was not kept"
  m="$(docker image inspect -f '{{index .Config.Labels "scone.measurement"}}' "$tag-app")"
  grep -q "mrenclaves: \[$m\]" s.yml || { cat s.yml; fail "the session does not name the secure image's measurement"; }
  grep -q "command: python3 /app/app.py" s.yml || { cat s.yml; fail "the session's command is not the Dockerfile's CMD"; }
  grep -q "name: greeting" s.yml || { cat s.yml; fail "no placeholder for the secret"; }
  "$scone" session create s.yml > /dev/null
  docker volume create "$tag-data" > /dev/null && volumes+=("$tag-data")
  run_secure "$tag-run" "$tag-app" -v "$tag-data:/data" > out.txt 2> err.txt \
    || { cat out.txt err.txt; fail "the built secure image failed"; }
  grep -q "^greeting-sha [0-9a-f]\{64\}$" out.txt && grep -q "^wrote True$" out.txt || { cat out.txt err.txt; fail "unexpected output"; }
  # CAS generated the secret: not the empty string.
  if grep -q "^greeting-sha $(printf '' | sha256sum | cut -d' ' -f1)$" out.txt; then fail "the secret was empty"; fi
  host_dir="$(docker volume inspect -f '{{.Mountpoint}}' "$tag-data")"
  [[ -d "$host_dir/.scone" ]] || fail "/data is not a SCONE volume"
  if grep -r -a -q -- "$marker" "$host_dir"; then fail "plaintext on the volume's host side"; fi
  ;;
refused-images)
  # Images the runtime cannot enter are refused with the reason, and nothing is built.
  refused() {  # refused FROM PATTERN [sconify options...]
    local from="$1" pattern="$2"; shift 2
    if "$scone" image sconify --from "$from" --to "$tag-out" --quiet "$@" > out.txt 2> err.txt; then
      fail "$from was sconified; expected: $pattern"
    fi
    grep -q -- "$pattern" err.txt || { cat err.txt; fail "$from: the refusal does not say '$pattern'"; }
    grep -q "^scone: " err.txt || { cat err.txt; fail "no scone: error line"; }
    if docker image inspect "$tag-out" > /dev/null 2>&1; then fail "$from: an image was built although refused"; fi
  }
  [[ -x /bin/busybox ]] || apt-get install -y -qq -o DPkg::Lock::Timeout=600 busybox-static > /dev/null
  cp /bin/busybox busybox
  # A program whose loader is musl's (the PT_INTERP string replaced, same length padded).
  python3 - <<'EOF'
data = open("/usr/bin/true", "rb").read()
old = b"/lib64/ld-linux-x86-64.so.2"
new = b"/lib/ld-musl-x86_64.so.1"
assert old in data
open("musl-true", "wb").write(data.replace(old, new + b"\0" * (len(old) - len(new)), 1))
EOF
  chmod +x musl-true
  printf '#!/busybox sh\necho hi\n' > to-static.sh && chmod +x to-static.sh
  # A small image of its own (sconify unpacks each image it checks): the programs above, and
  # /bin/true with glibc for the control.
  mkdir -p ctx/bin ctx/lib/x86_64-linux-gnu ctx/lib64 ctx/full
  cp busybox musl-true to-static.sh ctx/ && echo old > ctx/full/file
  cp /usr/bin/true ctx/bin/true
  # glibc's libraries (the runtime's build may need libm, libdl, ... besides libc).
  for lib in libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1; do
    cp /lib/x86_64-linux-gnu/$lib ctx/lib/x86_64-linux-gnu/
  done
  cp -L /lib64/ld-linux-x86-64.so.2 ctx/lib64/
  build_image "$tag-base" $'FROM scratch\nCOPY ctx/ /\nCMD ["/bin/true"]' ctx
  build_image "$tag-static" "FROM $tag-base"$'\nENTRYPOINT ["/busybox", "sh"]'
  build_image "$tag-musl" "FROM $tag-base"$'\nENTRYPOINT ["/musl-true"]'
  build_image "$tag-shell" "FROM $tag-base"$'\nCMD ["/bin/sh", "-c", "echo hi"]'
  refused "$tag-static" "/busybox is statically linked"
  refused "$tag-musl" "/musl-true is not a glibc program: its loader is /lib/ld-musl-x86_64.so.1"
  refused "$tag-base" "/busybox is statically linked" --command /to-static.sh
  refused "$tag-shell" "with white space"
  refused "$tag-base" "--fs-dir /full already holds files in the image" --fs-dir /full
  refused "$tag-base" "nothere is not found on the image's PATH" --command nothere
  refused "$tag-base" "--binary /bin/ls is not what its command starts" --binary /bin/ls
  refused "$tag-does-not-exist" "does not exist"
  refused "$tag-base" "cannot go into an image's settings" --fs-dir '/da$ta'
  # The control: the same base with a glibc program is accepted.
  "$scone" image sconify --from "$tag-base" --to "$tag-out" --quiet > s.yml 2> err.txt \
    || { cat err.txt; fail "a glibc program was refused"; }
  grep -q "command: /bin/true" s.yml || fail "no session printed"
  ;;
*) fail "unknown case $case_name" ;;
esac
echo "ok: $case_name"
