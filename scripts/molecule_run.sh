#!/usr/bin/env bash
# Run molecule scenarios one after the other (mk/fleet.mk: make molecule, molecule-test, molecule-rest):
#
#   scripts/molecule_run.sh SCENARIO...
#
# One scenario at a time (not --all), so that a failing one names itself and the rest still run; exits 1 if
# any failed. MOLECULE_DEADLINE=<epoch s>: a scenario starts only if MOLECULE_SLOT (default 600) s remain
# before it; the ones that do not fit are listed as skipped (not a failure).
#
# Hosts on the rhel-like image need Fedora's grubby (tests/images/build.sh --grubby: ../shared/tools/grubby or
# $SKM_GRUBBY), and build.sh makes no rhel-like image without it. Then such a host is dropped from its scenario
# when exactly one other host remains (molecule test --platform-name), else the whole scenario is skipped;
# both are printed with the reason. Never is an older rhel-like image used in its place.
set -euo pipefail
project=$(cd "$(dirname "$0")/.." && pwd)
molecule="$project/.venv/bin/molecule"
python="$project/.venv/bin/python"
deadline="${MOLECULE_DEADLINE:-}"
slot="${MOLECULE_SLOT:-600}"

# "NAME IMAGE" for every platform of scenario $1.
platforms() {
  "$python" -c 'import sys, yaml
for p in yaml.safe_load(open(sys.argv[1]))["platforms"]:
    print(p["name"], p["image"])' "$project/extensions/molecule/$1/molecule.yml"
}

# Sets run_args for scenario $1 (rc 1: skip the scenario). Reads grubby_missing (the reason, or empty).
plan_scenario() {
  local s=$1 name image kept=() dropped=()
  run_args=()
  [ -n "$grubby_missing" ] || return 0
  while read -r name image; do
    case $image in */rhel-like:*) dropped+=("$name") ;; *) kept+=("$name") ;; esac
  done < <(platforms "$s")
  [ ${#dropped[@]} -gt 0 ] || return 0
  if [ ${#kept[@]} -eq 1 ]; then
    echo "molecule $s: skipped host ${dropped[*]}: rhel-like host needs $grubby_missing"
    run_args=(--platform-name "${kept[0]}")
    return 0
  fi
  echo "molecule $s: skipped: its rhel-like host ${dropped[*]} needs $grubby_missing"
  return 1
}

main() {
  local s start failed=() skipped=() rc=0
  grubby_missing=$(bash "$project/tests/images/build.sh" --grubby 2>&1 >/dev/null) || rc=$?
  case $rc in
    0) grubby_missing= ;;
    1) ;;
    *) echo "$grubby_missing" >&2; exit 2 ;;
  esac
  for s in "$@"; do
    start=$(date +%s)
    if [ -n "$deadline" ] && [ $((start + slot)) -gt "$deadline" ]; then
      echo "molecule $s: skipped (time budget: $((deadline - start)) s left, a scenario may take $slot s)"
      skipped+=("$s"); continue
    fi
    plan_scenario "$s" || { skipped+=("$s"); continue; }
    if "$molecule" test -s "$s" "${run_args[@]}"; then
      echo "molecule $s: passed in $(($(date +%s) - start)) s"
    else
      echo "molecule $s: FAILED after $(($(date +%s) - start)) s"; failed+=("$s")
    fi
  done
  [ ${#skipped[@]} -eq 0 ] || echo "molecule: skipped: ${skipped[*]}"
  [ ${#failed[@]} -eq 0 ] || { echo "molecule: failed: ${failed[*]}"; exit 1; }
}

main "$@"
