# Shared helpers for the shell tests (sourced).

# fail MESSAGE: report and stop the test.
fail() { echo "FAIL${case_name:+ ($case_name)}: $*" >&2; exit 1; }

# wait_for_line FILE PATTERN PID: until FILE has a line matching PATTERN, while PID lives
# (bounded: 10 s). Servers print such a line once they listen.
wait_for_line() {
  local file="$1" pattern="$2" pid="$3"
  for _ in $(seq 1 200); do
    grep -q -- "$pattern" "$file" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || fail "process $pid exited before printing '$pattern'"
    sleep 0.05
  done
  fail "no '$pattern' in $file"
}
