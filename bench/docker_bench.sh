#!/usr/bin/env bash
# Secure images: `scone image sconify` time for each curated image, and the start-up of a
# container, secure (attestation to the host's CAS through LAS, before main) vs native, median of
# 10 runs of `python3 -c print(42)` in the curated python image (SCONE_BENCH_SCONIFY="" skips
# the sconify part). Prints times and the ratio, never a
# pass/fail. Uses the engine and images as tests/docker does (built on first use).
# usage: bench/docker_bench.sh SCONE
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
fail() { echo "docker_bench: $*" >&2; exit 1; }
source "$here/../tests/docker/lib.sh"
scone="$(realpath "$1")"
work="$(mktemp -d)"
export XDG_STATE_HOME="$work/state"
trap '"$scone" cas stop >/dev/null 2>&1 || true; docker image rm -f scone-bench/sconified >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
cd "$work"
docker_ready "$scone"
now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "sconify (scone image sconify --from scone-native/NAME, one run each):"
for name in ${SCONE_BENCH_SCONIFY-python redis nginx sqlite}; do
  curated_ready "$scone" "$name"
  t0=$(now)
  "$scone" image sconify --from "scone-native/$name" --to scone-bench/sconified --fs-dir /data --quiet > /dev/null
  t1=$(now)
  size=$(docker image inspect -f '{{.Size}}' "scone-native/$name")
  printf '  %-7s %6.2f s  (image %d MB)\n' "$name" "$(echo "$t1 - $t0" | bc)" $((size / 1000000))
done

"$scone" cas start > /dev/null
cas_addr="$(cat "$XDG_STATE_HOME/scone/cas/attestation")"
key_hash="$(openssl x509 -in "$XDG_STATE_HOME/scone/cas/cas.crt" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1)"
measurement="$(docker image inspect -f '{{index .Config.Labels "scone.measurement"}}' scone-curated/python)"
cat > s.yml <<YEOF
name: python
version: "0.3"
security:
  attestation:
    tolerate: [sim, debug-mode]
services:
  - name: python
    mrenclaves: [$measurement]
    command: python3 -c print(42)
    pwd: /
YEOF
"$scone" session create s.yml > /dev/null
# The same engine options for both (host network: the local CAS listens on the loopback; a
# volume at /data), so that only the runtime and attestation differ.
run_native() { docker run --rm --network host -v /data --entrypoint python3 scone-native/python -c 'print(42)'; }
run_secure() {
  docker run --rm --network host -v "$XDG_STATE_HOME/scone/las/las.sock:/var/run/scone/las.sock" \
    -e SCONE_CAS_ADDR="$cas_addr" -e SCONE_CAS_KEY_HASH="$key_hash" -v /data scone-curated/python
}
# The secure container prints 42 only with CAS's command line: it attested.
[[ "$(run_native)" == 42 && "$(run_secure)" == 42 ]] || fail "a warm-up run failed"
: > native.txt; : > secure.txt
for _ in $(seq 1 10); do  # alternating, so that load changes hit both alike
  t0=$(now); run_native > /dev/null; t1=$(now); echo "$t1 - $t0" | bc >> native.txt
  t0=$(now); run_secure > /dev/null; t1=$(now); echo "$t1 - $t0" | bc >> secure.txt
done
n=$(median < native.txt); s=$(median < secure.txt)
echo "container start-up, docker run --rm ... python3 -c print(42) (median of 10):"
printf '  native %.3f s, secure %.3f s: %+.0f ms, ratio %.2f\n' "$n" "$s" "$(echo "($s - $n) * 1000" | bc)" \
  "$(echo "$s / $n" | bc -l)"
