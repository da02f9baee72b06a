#!/usr/bin/env bash
# `scone session ...` against the embedded default: the first command starts a local CAS under
# the user's state directory; identities are per user (state directory).
# usage: session_cli_test.sh SCONE
set -euo pipefail
source "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
scone="$1"
work="$(mktemp -d)"
cd "$work"
export XDG_STATE_HOME="$work/alice-state"
cleanup() { XDG_STATE_HOME="$work/alice-state" "$scone" cas stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

cat > s1.yml <<'YEOF'
name: demo
version: "0.3"
services:
  - name: app
    mrenclaves: [0000000000000000000000000000000000000000000000000000000000000001]
secrets:
  - name: token
    kind: ascii
    value: "TOKEN-FOR-DEMO"
YEOF
"$scone" session create s1.yml > out || fail "create"
grep -q "^created session demo: hash [0-9a-f]\{64\}$" out || { cat out; fail "create output"; }
[[ -f "$XDG_STATE_HOME/scone/client.crt" && -f "$XDG_STATE_HOME/scone/cas/address" ]] || fail "state files"
[[ "$(stat -c %a "$XDG_STATE_HOME/scone/client.key")" == 600 ]] || fail "client key mode"
[[ "$("$scone" session list)" == "demo" ]] || fail "list"
"$scone" session show demo > shown 2> hash.txt
cmp s1.yml shown || fail "show differs from what was created"
hash=$(awk '{print $NF}' hash.txt)
if "$scone" session create s1.yml 2>err; then fail "created twice"; fi
grep -q "HTTP 409" err || { cat err; fail "no 409 for a second create"; }
{ cat s1.yml; echo "predecessor: $hash"; } > s2.yml
"$scone" session update s2.yml | grep -q "^updated session demo" || fail "update"
if "$scone" session update s2.yml 2>err; then fail "stale predecessor accepted"; fi
# Another user (another state directory, another identity) cannot read or update it.
addr=$(cat "$XDG_STATE_HOME/scone/cas/address")
cert="$XDG_STATE_HOME/scone/cas/cas.crt"
if XDG_STATE_HOME="$work/bob-state" "$scone" session show demo --cas "$addr" --cas-cert "$cert" 2>err; then
  fail "another user read the session"
fi
grep -q "HTTP 403" err || { cat err; fail "no 403 for another user"; }
# The session CA's certificate: for the session's readers only.
"$scone" session ca demo > ca.pem || fail "session ca"
openssl x509 -in ca.pem -noout -subject | grep -q "CN = SCONE session demo" || { cat ca.pem; fail "session ca output"; }
openssl x509 -in ca.pem -noout -ext basicConstraints | grep -q "CA:TRUE" || fail "the session CA is no CA"
if XDG_STATE_HOME="$work/bob-state" "$scone" session ca demo --cas "$addr" --cas-cert "$cert" > bob-ca.pem 2>err; then
  fail "another user read the session CA"
fi
grep -q "HTTP 403" err || { cat err; fail "no 403 for another user's session ca"; }
[[ ! -s bob-ca.pem ]] || fail "another user got a certificate"
if "$scone" session ca no-such-session 2>err; then fail "a CA for a session that does not exist"; fi
grep -q "HTTP 404" err || { cat err; fail "no 404 for a session that does not exist"; }
# CAS restarted keeps everything.
"$scone" cas stop
[[ ! -f "$XDG_STATE_HOME/scone/cas/address" ]] || fail "cas stop left its address"
"$scone" session show demo 2>/dev/null | grep -q "predecessor: $hash" || fail "session lost across restart"
"$scone" session ca demo | cmp - ca.pem || fail "the session CA changed across a restart"
if grep -r -a -q "TOKEN-FOR-DEMO" "$XDG_STATE_HOME/scone/cas"; then fail "secret in plaintext in the CAS state"; fi
# Deleting: only the owner; an importing session holds it back; afterwards the name is free
# and the session, its CA and its secrets are gone.
addr=$(cat "$XDG_STATE_HOME/scone/cas/address")  # restarted above: another port
if XDG_STATE_HOME="$work/bob-state" "$scone" session rm demo --cas "$addr" --cas-cert "$cert" 2>err; then
  fail "another user deleted the session"
fi
grep -q "HTTP 403" err || { cat err; fail "no 403 for another user's rm"; }
cat > importer.yml <<'YEOF'
name: importer
version: "0.3"
services:
  - name: app
    mrenclaves: [0000000000000000000000000000000000000000000000000000000000000002]
secrets:
  - name: token
    import:
      session: demo
      secret: token
YEOF
"$scone" session show demo > /dev/null 2> hash.txt
{ cat s1.yml; echo "    export:"; echo "      - session: importer"; echo "predecessor: $(awk '{print $NF}' hash.txt)"; } > s3.yml
"$scone" session update s3.yml > /dev/null || fail "update with an export"
"$scone" session create importer.yml > /dev/null || fail "create the importing session"
if "$scone" session rm demo 2>err; then fail "deleted a session another one imports from"; fi
grep -q "session importer imports secret token of session demo" err || { cat err; fail "unclear refusal"; }
"$scone" session show demo > /dev/null 2>&1 || fail "a refused rm deleted the session"
"$scone" session rm importer | grep -q "^deleted session importer" || fail "rm importer"
"$scone" session rm demo > out || fail "rm"
grep -q "^deleted session demo (its secrets and volume keys with it)$" out || { cat out; fail "rm output"; }
if "$scone" session show demo 2>err; then fail "a deleted session is shown"; fi
grep -q "HTTP 404" err || { cat err; fail "no 404 after rm"; }
if "$scone" session ca demo 2>/dev/null; then fail "a deleted session's CA"; fi
"$scone" session create s1.yml | grep -q "^created session demo" || fail "the name is not free after rm"
"$scone" session ca demo | cmp -s - ca.pem && fail "a new session of the same name got the old CA"
echo "ok: session cli"
