#!/usr/bin/env bash
# make demo: the whole job on a local test fleet, nothing outside it touched.
#
#   1. build (or reuse) the podman test images from Debian's mirror (tests/images/build.sh, cached),
#   2. start SKM_DEMO_HOSTS (default 6) hosts with tests/fleet/fleet.sh: by turn debian12, debian12-dkms (DKMS and
#      the out-of-tree module skm_hello), rhel-like (BLS entries, Fedora's grubby from ../shared/tools/grubby;
#      without it there are no rhel-like hosts, and build.sh and fleet.sh say so); even hosts EFI-like with MOK state,
#   3. run playbooks/site.yml over ssh in controller key mode (the fleet key stays in build/demo-fleet/keys;
#      hosts get certificates only), print the fleet report (enforced / refused / pending MOK per host),
#   4. run it again and show the recap: changed=0 on every host,
#   5. tear the fleet down (also on error or Ctrl-C).
#
# Needs root (rootful podman, ip netns, debootstrap for a first image build) and the .venv of
# scripts/bootstrap.sh (make demo runs it first). Writes only under build/ (keys, MOK password file, report,
# fleet state, logs) and podman's image store; the images stay cached for the next run.
#
# Per-host choices made for a fleet of containers (see tests/fleet/fleet.sh for the inventory):
# - the Debian hosts keep their command line in /etc/kernel/cmdline (kernel_install): a container boots nothing
#   and update-grub cannot run in one; the rhel-like hosts use Fedora's grubby on their BLS entries;
# - the safety gate refuses every host whose kernel does not trust our key for a module it would load
#   (the DKMS hosts: skm_hello is signed by our key, which Debian's kernel does not trust until MOK enrollment
#   is confirmed at the console). Hosts without any module of ours get skm_enforce_gate_override: their only
#   finding is that our certificate is in none of the kernel's keyrings, which no module they have depends on;
#   the report marks them "gate overridden".
set -euo pipefail
project=$(cd "$(dirname "$0")/.." && pwd)
cd "$project"
export CONTAINERS_CONF="$project/tests/images/containers.conf"
export ANSIBLE_COLLECTIONS_PATH="$project/build/collections"
export ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1
export ANSIBLE_PIPELINING=1 ANSIBLE_FORKS="${SKM_DEMO_FORKS:-10}"
hosts="${SKM_DEMO_HOSTS:-6}"
work="$project/build/demo-fleet"
venv="$project/.venv/bin"
fleet=(bash "$project/tests/fleet/fleet.sh")

say() { printf '\n==> %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || { echo "demo_fleet.sh: needs root (rootful podman, ip netns)" >&2; exit 2; }
[ -x "$venv/ansible-playbook" ] || { echo "demo_fleet.sh: run scripts/bootstrap.sh first (make demo does)" >&2; exit 2; }
[ "$hosts" -ge 5 ] || { echo "demo_fleet.sh: SKM_DEMO_HOSTS must be at least 5" >&2; exit 2; }

teardown() {
  local rc=$?
  say "tearing the fleet down"
  "${fleet[@]}" down || true
  exit $rc
}
trap teardown EXIT
trap 'exit 130' INT TERM

say "images (built once from the Debian mirror, then cached)"
bash tests/images/build.sh all

say "starting a fleet of $hosts hosts"
"${fleet[@]}" up "$hosts"
inventory=$("${fleet[@]}" inventory)
"${fleet[@]}" status

# The fleet key and the MOK one-time password live under build/, never in ~ and never on a command line.
mkdir -p "$work/keys"
chmod 0700 "$work"
if [ ! -s "$work/secrets.yml" ]; then
  umask 077
  printf 'skm_mok_password: "%s"\n' "$(openssl rand -hex 12)" > "$work/secrets.yml"
  umask 022
fi
cat > "$work/demo-vars.yml" <<EOF
skm_signing_key_mode: controller
skm_signing_key_controller_dir: $work/keys
skm_report_dir: $work/report
EOF
# Hosts with no module of ours (see the header): the gate's override, marked in the report.
cat > "$work/demo-override.yml" <<'EOF'
skm_enforce_gate_override: "{{ 'debian12_dkms' not in group_names }}"
EOF

site() {
  "${fleet[@]}" run "$venv/ansible-playbook" -i "$inventory" playbooks/site.yml \
    -e @"$work/demo-vars.yml" -e @"$work/secrets.yml" -e @"$work/demo-override.yml"
}

say "first run of playbooks/site.yml (controller key mode)"
start=$SECONDS
if ! site > "$work/run1.log" 2>&1; then
  tail -40 "$work/run1.log"; echo "site.yml failed; full output in $work/run1.log" >&2; exit 1
fi
sed -n '/PLAY RECAP/,$p' "$work/run1.log"
echo "first run: $((SECONDS - start)) s (full output in $work/run1.log)"

say "fleet report ($work/report/fleet-report.md)"
cat "$work/report/fleet-report.md"

say "second run: nothing left to change"
start=$SECONDS
site > "$work/run2.log" 2>&1 || { tail -40 "$work/run2.log"; echo "second site.yml run failed; output in $work/run2.log" >&2; exit 1; }
sed -n '/PLAY RECAP/,$p' "$work/run2.log"
echo "second run: $((SECONDS - start)) s"
if grep -E 'changed=[1-9]|failed=[1-9]|unreachable=[1-9]' <(sed -n '/PLAY RECAP/,$p' "$work/run2.log") >/dev/null; then
  echo "demo: the second run changed something (or failed); see $work/run2.log" >&2
  exit 1
fi
say "done: changed=0 on every host of the second run"
