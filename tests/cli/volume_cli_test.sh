#!/usr/bin/env bash
# CLI tests of `scone volume`: usage: volume_cli_test.sh SCONE CASE
# Each case runs in a fresh temporary directory and fails with a message naming what went wrong.
set -euo pipefail
source "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
scone="$1"
case_name="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

# expect_exit CODE CMD...: runs CMD, keeps stdout/stderr in out/err, checks the exit code.
expect_exit() {
  local want="$1"; shift
  set +e; "$@" >out 2>err; local got=$?; set -e
  [[ "$got" == "$want" ]] || { cat out err >&2; fail "'$*' exited $got, expected $want"; }
}
contains() { grep -q -- "$2" "$1" || { cat "$1" >&2; fail "$1 lacks '$2'"; }; }
flip_byte() {  # flip_byte FILE OFFSET
  local b; b=$(xxd -p -s "$2" -l 1 "$1")
  printf "%02x" $((0x$b ^ 1)) | xxd -r -p | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
make_plain() {
  mkdir -p plain/db plain/lib plain/pub
  for i in $(seq 1 3000); do echo "row $i SECRET-MARKER-$i"; done > plain/db/table.csv
  echo "password=SECRET-PASSWORD" > plain/db/app.conf
  head -c 20000 /dev/urandom > plain/lib/libfoo.so
  echo "public page" > plain/pub/index.html
  ln -s db/app.conf plain/config-link
}

case "$case_name" in
help)
  for cmd in "" "volume" "volume create" "volume import" "volume export" "volume verify" \
             "volume tag" "volume ls" "volume cat"; do
    # shellcheck disable=SC2086
    expect_exit 0 "$scone" $cmd --help
    contains out "Usage"
  done
  expect_exit 0 "$scone" --version
  contains out "scone 0."
  expect_exit 2 "$scone" volume frobnicate
  ;;

import-export-roundtrip)
  make_plain
  expect_exit 0 "$scone" volume import plain vol --key-file k --region lib=authenticated \
    --region pub=not-protected
  contains err "created key file k"
  [[ "$(stat -c %a k)" == 600 ]] || fail "key file mode is $(stat -c %a k)"
  ! grep -r -q -e SECRET-MARKER -e SECRET-PASSWORD vol || fail "plaintext on disk"
  cmp plain/lib/libfoo.so vol/lib/libfoo.so || fail "authenticated file is not plaintext on disk"
  cmp plain/pub/index.html vol/pub/index.html || fail "not-protected file changed"
  expect_exit 0 "$scone" volume verify vol --key-file k
  contains out "intact: 3 protected files"
  expect_exit 0 "$scone" volume export vol exported --key-file k
  diff -r plain exported || fail "export differs from the imported tree"
  expect_exit 0 "$scone" volume cat vol db/app.conf --key-file k
  contains out "password=SECRET-PASSWORD"
  expect_exit 0 "$scone" volume ls vol --key-file k
  contains out "authenticated"
  contains out "db/table.csv"
  ;;

import-progress)
  # On a terminal (script's pty) import shows how far it is; in a pipe and with --quiet, nothing.
  command -v script > /dev/null || fail "script (util-linux) is missing"
  mkdir plain
  for i in $(seq 1 40); do head -c 50000 /dev/urandom > "plain/f$i"; done
  head -c 32 /dev/urandom | xxd -p -c 64 > k && chmod 600 k
  script -qec "'$scone' volume import plain v1 --key-file k" /dev/null > tty.txt
  contains tty.txt "importing plain: 40/40 files, 1.9 MiB/1.9 MiB (100%)"
  contains tty.txt "imported 40 protected"
  expect_exit 0 "$scone" volume import plain v2 --key-file k
  [[ ! -s err ]] || { cat err; fail "progress written to a stderr that is not a terminal"; }
  script -qec "'$scone' volume import --quiet plain v3 --key-file k" /dev/null > quiet.txt
  if grep -q "importing plain" quiet.txt; then fail "progress shown with --quiet"; fi
  contains quiet.txt "imported 40 protected"
  ;;
tag)
  make_plain
  "$scone" volume create vol --key-file k >/dev/null 2>&1
  expect_exit 0 "$scone" volume tag vol --key-file k
  [[ "$(wc -l < out)" == 1 && "$(cat out)" =~ ^[0-9a-f]{64}$ ]] || fail "tag output: $(cat out)"
  empty_tag="$(cat out)"
  expect_exit 0 "$scone" volume tag vol --key-file k
  [[ "$(cat out)" == "$empty_tag" ]] || fail "tag changed without a change"
  expect_exit 0 "$scone" volume import plain vol --key-file k
  expect_exit 0 "$scone" volume tag vol --key-file k
  [[ "$(cat out)" != "$empty_tag" ]] || fail "tag did not move after import"
  expect_exit 0 "$scone" volume verify vol --key-file k --tag "$(cat out)"
  ;;

tamper-reports-one-line-per-file)
  make_plain
  "$scone" volume import plain vol --key-file k --region lib=authenticated >/dev/null 2>&1
  flip_byte vol/db/table.csv 9000            # chunk 1 (header 64 + table page 4096 + chunk 0)
  flip_byte vol/db/table.csv 20000           # chunk 3, same file: still one line
  flip_byte vol/lib/libfoo.so 5000           # authenticated: plaintext on disk, still checked
  expect_exit 3 "$scone" volume verify vol --key-file k
  [[ "$(wc -l < out)" == 2 ]] || { cat out; fail "expected one line per damaged file"; }
  contains out "vol/db/table.csv: chunk 1 modified, swapped or damaged; chunk 3 modified"
  contains out "vol/lib/libfoo.so: chunk 1 modified"
  contains err "2 damaged file(s)"
  expect_exit 1 "$scone" volume export vol exported --key-file k
  contains err "db/table.csv"
  [[ ! -e exported/db/table.csv ]] || fail "export left a partial plaintext file"
  ;;

truncated-missing-unknown-rolledback)
  make_plain
  "$scone" volume import plain vol --key-file k >/dev/null 2>&1
  cp vol/db/app.conf old-app.conf
  truncate -s -100 vol/db/table.csv
  rm vol/db/app.conf
  echo "planted" > vol/db/planted.txt
  expect_exit 3 "$scone" volume verify vol --key-file k
  contains out "vol/db/table.csv: truncated"
  contains out "vol/db/app.conf: missing"
  contains out "vol/db/planted.txt: unknown file"
  # A file put back from an older copy after an update.
  rm -rf vol plain2 && "$scone" volume import plain vol --key-file k >/dev/null 2>&1
  cp vol/db/app.conf old-app.conf
  mkdir -p plain2 && echo "x" > plain2/new.txt
  "$scone" volume import plain2 vol --key-file k >/dev/null 2>&1
  cp vol/db/app.conf now-app.conf
  expect_exit 0 "$scone" volume verify vol --key-file k
  ;;

rollback-with-tag)
  make_plain
  "$scone" volume import plain vol --key-file k >/dev/null 2>&1
  cp -a vol vol.old
  mkdir more && echo "new data" > more/new.txt
  "$scone" volume import more vol --key-file k >/dev/null 2>&1
  tag="$("$scone" volume tag vol --key-file k)"
  rm -rf vol && mv vol.old vol
  expect_exit 1 "$scone" volume verify vol --key-file k --tag "$tag"
  contains err "does not match the trusted tag"
  expect_exit 1 "$scone" volume export vol out-dir --key-file k --tag "$tag"
  ;;

bad-input)
  make_plain
  "$scone" volume import plain vol --key-file k >/dev/null 2>&1
  head -c 32 /dev/urandom | xxd -p -c 64 > wrong && chmod 600 wrong
  expect_exit 1 "$scone" volume verify vol --key-file wrong
  contains err "wrong key for volume vol"
  expect_exit 1 "$scone" volume verify plain --key-file k
  contains err "plain is not a SCONE volume"
  expect_exit 1 "$scone" volume verify vol --key-file missing-key
  contains err "key file missing-key does not exist"
  cp k loose && chmod 644 loose
  expect_exit 1 "$scone" volume verify vol --key-file loose
  contains err "chmod 600 loose"
  echo "not hex" > badkey && chmod 600 badkey
  expect_exit 1 "$scone" volume verify vol --key-file badkey
  contains err "does not hold a volume key"
  expect_exit 1 "$scone" volume verify vol --key-file k --tag 1234
  contains err "--tag must be 64 hex digits"
  expect_exit 1 "$scone" volume create vol2 --key-file k --region lib=secret
  contains err "unknown region kind 'secret'"
  expect_exit 1 "$scone" volume create vol --key-file k
  contains err "already a SCONE volume"
  # Files already in the directory would read as unknown files: refused, pointing to import.
  expect_exit 1 "$scone" volume create plain --key-file k
  contains err "plain is not empty"
  contains err "scone volume import plain"
  [[ ! -e plain/.scone ]] || fail "a volume was made in a directory with files"
  expect_exit 1 "$scone" volume import plain vol --key-file k
  contains err "exists"
  head -c 100 /dev/urandom > vol/.scone/volume
  expect_exit 1 "$scone" volume verify vol --key-file k
  contains err "vol/.scone/volume"
  ;;

verify-keeps-owner)
  # root verifying a volume of another user (postgres' data directory) leaves every file of it
  # that user's: the volume's state file, rewritten at close, kept root's owner and mode 600,
  # and the owner's next `scone run` failed with "Permission denied".
  chmod 755 "$work"
  "$scone" volume create vol --key-file key >/dev/null 2>&1
  chown -R nobody:nogroup vol && chown nobody key
  runuser -u nobody -- "$scone" run --volume "$work/vol:$work/key" -- /bin/sh -c "echo data > $work/vol/f" ||
    fail "the owner's first write"
  expect_exit 0 "$scone" volume verify vol --key-file key
  others="$(find vol ! -user nobody)"
  [[ -z "$others" ]] || fail "files of the volume no longer the owner's after verify: $others"
  [[ "$(runuser -u nobody -- "$scone" run --volume "$work/vol:$work/key" -- /bin/cat "$work/vol/f")" == data ]] ||
    fail "the owner cannot use the volume after root verified it"
  ;;
key-never-printed)
  make_plain
  expect_exit 0 "$scone" volume import plain vol --key-file k
  key="$(tr -d '\n' < k)"
  for cmd in "verify vol" "tag vol" "ls vol" "export vol exp"; do
    # shellcheck disable=SC2086
    "$scone" volume $cmd --key-file k >out 2>err || true
    ! grep -q "$key" out err || fail "key printed by 'scone volume $cmd'"
  done
  ! grep -r -q "$key" vol || fail "key stored in the volume"
  ;;

*)
  fail "unknown case"
  ;;
esac
echo "ok: $case_name"
