# Sourced by scripts/test.sh (and so by .ci/run, which sources that). `step NAME COMMAND...` runs a
# command as a named step and prints how long it took; on exit the script prints every step's time
# and the total. A failing step stops the script with its exit status (the sourcing script runs
# under `set -e`).
# shellcheck shell=bash

# Sourcing it again keeps the first start time and the steps recorded so far.
if [[ -z "${steps_loaded:-}" ]]; then
  steps_loaded=1
  steps_started=$SECONDS
  timings=()

  step() {
    local name="$1"
    shift
    echo
    echo "=== $name: $*"
    local started=$SECONDS
    "$@"
    local took=$((SECONDS - started))
    timings+=("$(printf '%-28s %4dm%02ds' "$name" $((took / 60)) $((took % 60)))")
    echo "=== $name: done in $((took / 60))m$((took % 60))s"
  }

  print_timings() {
    echo
    echo "=== timings"
    ((${#timings[@]} == 0)) || printf '%s\n' "${timings[@]}"
    local total=$((SECONDS - steps_started))
    echo "total $((total / 60))m$((total % 60))s"
  }
  trap print_timings EXIT
fi
