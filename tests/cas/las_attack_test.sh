#!/usr/bin/env bash
# Borrowed evidence, as an attacker would try it with real processes: a program connects to LAS,
# forks, and makes LAS measure a genuine program (/bin/sleep under the runtime, which the session
# names) while it keeps the evidence for a key of its own (tests/cas/las_attacker.cc).
# usage: las_attack_test.sh SCONE ATTACKER CASE
set -euo pipefail
source "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
scone="$1"
attacker="$2"
case_name="$3"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
export XDG_STATE_HOME="$work/state"
las_pid=""
cleanup() {
  [[ -n "$las_pid" ]] && kill -CONT "$las_pid" 2>/dev/null
  "$scone" cas stop >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
runtime="$(dirname "$scone")/libscone-runtime.so"
cas_dir="$XDG_STATE_HOME/scone/cas"
las_dir="$XDG_STATE_HOME/scone/las"

cat > s.yml <<YEOF
name: victim
version: "0.3"
security:
  attestation:
    tolerate: [sim]
services:
  - name: app
    mrenclaves: [$("$scone" measure /bin/sleep | tail -1)]
    command: sleep 1 \$\$SCONE::token\$\$
secrets:
  - name: token
    kind: ascii
    size: 32
YEOF
"$scone" session create s.yml >/dev/null
args=("$las_dir/las.sock" "$(cat "$cas_dir/attestation")" "$cas_dir/cas.crt" victim/app "$runtime" /bin/sleep 3)
# attack MODE: the attacker's verdict line.
attack() { timeout 60 "$attacker" "$1" "${args[@]}" | grep -m1 -E "^(STOLEN|LAS REFUSED|CAS REFUSED|ERROR)"; }

case "$case_name" in
honest-control)
  # Asking for itself works (LAS serves it), and CAS refuses the attacker's own program.
  out=$(attack honest)
  [[ "$out" == "CAS REFUSED: "*"is not one the policy names"* ]] || fail "control: $out"
  ;;
child-sends)
  # The child writes on the connection its parent opened; the parent runs the genuine program.
  out=$(attack child-sends)
  [[ "$out" != STOLEN* ]] || fail "the child obtained the service's configuration: $out"
  [[ "$out" == "LAS REFUSED: "*"not by process"*"that connected"* ]] || fail "no refusal naming the sender: $out"
  ;;
exec-after-send)
  # The parent asks, then execs the genuine program; LAS is held (SIGSTOP) until the exec has
  # happened, so it measures the genuine program: the kind of delay an attacker would arrange.
  las_pid=$(cat "$las_dir/pid")
  kill -STOP "$las_pid"
  "$attacker" exec-after-send "${args[@]}" > verdict.txt &
  attacker_pid=$!
  for _ in $(seq 1 200); do
    grep -q libscone-runtime "/proc/$attacker_pid/maps" 2>/dev/null && break
    sleep 0.05
  done
  grep -q libscone-runtime "/proc/$attacker_pid/maps" || fail "the attacker never ran the genuine program"
  kill -CONT "$las_pid"
  las_pid=""
  wait "$attacker_pid" || true
  for _ in $(seq 1 200); do [[ -s verdict.txt ]] && break; sleep 0.05; done
  out=$(grep -m1 -E "^(STOLEN|LAS REFUSED|CAS REFUSED|ERROR)" verdict.txt || true)
  [[ "$out" != STOLEN* ]] || fail "the child obtained the service's configuration: $out"
  [[ "$out" == "LAS REFUSED: "*"executed another program"* ]] || fail "no refusal naming the exec: $out"
  ;;
socket-mode)
  # Only LAS's own user (and root) reach it; another user's process is refused by the kernel.
  [[ "$(stat -c %a "$las_dir/las.sock")" == 600 ]] || fail "LAS socket mode $(stat -c %a "$las_dir/las.sock")"
  chmod 711 "$work" "$XDG_STATE_HOME" "$XDG_STATE_HOME/scone" "$las_dir"
  if setpriv --reuid=65534 --regid=65534 --clear-groups "$scone" run --las "$las_dir/las.sock" \
       --print-evidence -- /bin/true > out.txt 2> err.txt; then
    fail "a process of another user obtained evidence"
  fi
  grep -q "Permission denied" err.txt || { cat err.txt; fail "no permission error for another user"; }
  ;;
other-mount-namespace)
  # In another mount namespace (a container) the paths a process names are not LAS's files: LAS
  # measures what that process maps, through /proc/PID/exe and /proc/PID/map_files. Here
  # /bin/true is /bin/false's bytes in the namespace: the evidence must name false's measurement.
  key=$("$scone" las platform-key --state "$las_dir")
  if ! unshare --mount sh -c 'mount --bind /bin/false /bin/true && exec "$0" run --las "$1" --print-evidence -- /bin/true' \
      "$scone" "$las_dir/las.sock" > ev.txt 2> err.txt; then
    cat err.txt; fail "LAS refused a process of another mount namespace"
  fi
  verify() { "$scone" attest verify --evidence "$(tail -1 ev.txt)" --platform-key "$key" --tolerate sim --mrenclave "$1"; }
  verify "$("$scone" measure /bin/false | tail -1)" > /dev/null 2> err.txt || { cat err.txt; fail "not the measurement of what ran"; }
  if verify "$("$scone" measure /bin/true | tail -1)" > /dev/null 2>&1; then
    fail "LAS measured its own /bin/true, not the file the process runs"
  fi
  "$scone" run --las "$las_dir/las.sock" --print-evidence -- /bin/true > /dev/null || fail "LAS refused its own namespace"
  ;;
hidden-preload)
  # A preloaded library that hides: it leaves an anonymous executable page behind (where a
  # payload thread would run) and makes its own file's code non-executable before the runtime
  # attests, so the executable files are exactly the genuine program's (hidden_preload.c).
  # Before (hostile finding), LAS measured only those files and CAS released the session's
  # configuration: sleep got the token as an argument and printed it in its complaint.
  cc -shared -fPIC -O2 -nostartfiles -fno-stack-protector -fcf-protection=none \
    -o hidden.so "$here/hidden_preload.c" || fail "building the hidden preload"
  # Started as `scone run --config-id` starts it, without scone itself (whose test build's
  # sanitizer must come first in its own process).
  key_hash=$(openssl x509 -in "$cas_dir/cas.crt" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1)
  rc=0
  timeout 60 env SCONE_CONFIG_ID=victim/app SCONE_CAS_ADDR="$(cat "$cas_dir/attestation")" \
    SCONE_LAS_ADDR="$las_dir/las.sock" SCONE_CAS_KEY_HASH="$key_hash" SCONE_VOLUME_ROOTS= \
    LD_PRELOAD="$runtime:$work/hidden.so" /bin/sleep > out.txt 2>&1 || rc=$?
  ! grep -q "invalid time interval" out.txt || { cat out.txt; fail "the hidden code's process received the session's configuration"; }
  [[ $rc == 126 ]] || { cat out.txt; fail "exit $rc, not 126 (refused before main)"; }
  grep -q "LAS refused: process [0-9]* executes memory that is no file's" out.txt || { cat out.txt; fail "no refusal naming the anonymous code"; }
  # The same program without the preload is served.
  rc=0
  timeout 60 "$scone" run --config-id victim/app -- /bin/sleep > out.txt 2>&1 || rc=$?
  grep -q "invalid time interval" out.txt || { cat out.txt; fail "the genuine program did not receive its configuration"; }
  ;;
*) fail "unknown case $case_name" ;;
esac
echo "ok: $case_name"
