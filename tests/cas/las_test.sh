#!/usr/bin/env bash
# LAS (sim platform) measures the requesting process itself: evidence from a runtime at start-up
# verifies against `scone measure` of the same program, and against nothing else.
# usage: las_test.sh SCONE
set -euo pipefail
source "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
scone="$1"
work="$(mktemp -d)"
las_pid=""
cleanup() { [[ -n "$las_pid" ]] && kill "$las_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"

"$scone" las serve --state state --socket "$work/las.sock" > out.txt 2> err.txt &
las_pid=$!
wait_for_line out.txt "listening on" "$las_pid"
key=$(sed -n 's/.*platform key \([0-9a-f]\{64\}\).*/\1/p' out.txt)
[[ -n "$key" ]] || { cat out.txt err.txt; fail "LAS did not start"; }
[[ "$("$scone" las platform-key --state state)" == "$key" ]] || fail "platform-key differs"

for prog in /bin/true /usr/bin/python3 sqlite3; do
  ev=$("$scone" run --las "$work/las.sock" --print-evidence -- "$prog")
  m=$("$scone" measure "$prog" | tail -n1)
  "$scone" attest verify --evidence "$ev" --platform-key "$key" --mrenclave "$m" --tolerate sim \
    | grep -q "evidence verified: mode sim" || fail "evidence for $prog does not verify"
done
ev=$("$scone" run --las "$work/las.sock" --print-evidence -- /bin/true)
m_true=$("$scone" measure /bin/true | tail -n1)
m_ls=$("$scone" measure /bin/ls | tail -n1)
refused() {  # refused REASON ARGS...
  local reason="$1"; shift
  if "$scone" attest verify --evidence "$ev" "$@" 2>err; then fail "accepted: $*"; fi
  grep -q -- "$reason" err || { cat err; fail "no '$reason' in the refusal"; }
}
refused "does not tolerate" --platform-key "$key" --mrenclave "$m_true"
refused "not one the policy names" --platform-key "$key" --mrenclave "$m_ls" --tolerate sim
other=$("$scone" las platform-key --state other-state)
refused "not trusted" --platform-key "$other" --mrenclave "$m_true" --tolerate sim
refused "replayed" --platform-key "$key" --mrenclave "$m_true" --tolerate sim --report-data "$(printf '%0128d' 0)"
# A truncated or corrupted request never crashes LAS.
printf '\x10\x00\x00\x00garbage' | timeout 5 socat - "UNIX-CONNECT:$work/las.sock" >/dev/null 2>&1 || true
ev2=$("$scone" run --las "$work/las.sock" --print-evidence -- /bin/true)
[[ -n "$ev2" ]] || fail "LAS stopped serving after a bad request"
echo "ok: las"
