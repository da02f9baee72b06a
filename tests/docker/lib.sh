# Shared helpers for the Docker tests (sourced after tests/lib.sh): the real engine from Debian's
# docker.io, started here if it is not running, and the Debian 12 base image, built once per
# machine (debootstrap + docker import) and shared by every test case.
#
# Each test case calls docker_ready SCONE first. The daemon is left running for the next case, as
# a system's dockerd would be; its output goes to a log file, never to the test's own stdout
# (ctest waits for every holder of that pipe). Nothing here sleeps as synchronisation: readiness
# is polled, bounded.

DOCKER=/usr/bin/docker  # docker.io's client (another `docker` may come first on PATH)
export SCONE_DOCKER="$DOCKER"
DOCKER_LOCK=/run/scone-docker-tests.lock
DOCKERD_LOG=/var/log/scone-dockerd.log

docker() { "$DOCKER" "$@"; }

# Installs docker.io and debootstrap if missing (apt-get waits for another apt's lock).
docker_install() {
  local missing=()
  for p in docker.io debootstrap; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null \
    || fail "cannot install ${missing[*]}"
}

# Starts dockerd in the background unless one answers; waits until `docker info` succeeds
# (bounded: 60 s).
docker_start() {
  docker info >/dev/null 2>&1 && return 0
  if ! pgrep -x dockerd >/dev/null; then
    setsid /usr/sbin/dockerd >>"$DOCKERD_LOG" 2>&1 < /dev/null &
  fi
  for _ in $(seq 1 600); do
    docker info >/dev/null 2>&1 && return 0
    pgrep -x dockerd >/dev/null || { tail -20 "$DOCKERD_LOG" >&2; fail "dockerd exited (log: $DOCKERD_LOG)"; }
    sleep 0.1
  done
  tail -20 "$DOCKERD_LOG" >&2
  fail "dockerd did not answer within 60 s (log: $DOCKERD_LOG)"
}

# docker_ready SCONE: the engine runs and the base image exists (built by `scone image base`,
# which reuses it when present). One test case at a time does this (flock): ctest -j2 must not
# start two daemons or build the base twice.
docker_ready() {
  local scone="$1"
  exec 9>"$DOCKER_LOCK"
  flock 9
  docker_install
  docker_start
  "$scone" image base --quiet || fail "cannot build the base image"
  flock -u 9
  exec 9>&-
}

# curated_ready SCONE NAME [SESSION_FILE]: scone-native/NAME and scone-curated/NAME exist (built
# once, under the lock). With SESSION_FILE, the curated image is built again with this build's
# runtime (the native one comes from the engine's cache) and its example session written there.
curated_ready() {
  local scone="$1" name="$2" session="${3:-}"
  exec 9>"$DOCKER_LOCK"
  flock 9
  # The curated image carries the runtime it was built with: one from an older build may not
  # speak this build's protocol with CAS, so the image is rebuilt when the runtime changed.
  local stamp="/var/tmp/scone-test-curated-$name.runtime" runtime_sum
  runtime_sum="$(sha256sum "$(dirname "$(realpath "$scone")")/libscone-runtime.so" | cut -d' ' -f1)"
  if [[ -n "$session" ]]; then
    "$scone" image curated build "$name" --quiet --session-out "$session" || fail "cannot build the curated $name image"
    echo "$runtime_sum" > "$stamp"
  elif ! docker image inspect "scone-curated/$name" >/dev/null 2>&1 || [[ "$(cat "$stamp" 2>/dev/null)" != "$runtime_sum" ]]; then
    "$scone" image curated build "$name" --quiet --session-out "${work:-/tmp}/curated-$name.yml" || fail "cannot build the curated $name image"
    echo "$runtime_sum" > "$stamp"
  fi
  flock -u 9
  exec 9>&-
}

# remove_containers NAME...: removes the test's containers and their anonymous volumes.
remove_containers() {
  local c
  for c in "$@"; do docker rm -f -v "$c" >/dev/null 2>&1 || true; done
}

# swarm_ready SCONE: the engine, the native python and redis images a stack uses, and a
# single-node swarm (initialised here if this engine is in none).
swarm_ready() {
  local scone="$1" name
  docker_ready "$scone"
  for name in python redis; do
    docker image inspect "scone-native/$name" > /dev/null 2>&1 || curated_ready "$scone" "$name"
  done
  if [[ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]]; then
    docker swarm init --advertise-addr 127.0.0.1 > /dev/null
  fi
}
