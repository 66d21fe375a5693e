#!/usr/bin/env bash
# The main job on an embedded default: sign Debian's real kernel module tree in a scratch directory
# with a freshly made key, through the collection's own modules, twice (the second run changes nothing),
# then audit it. Touches nothing outside the scratch directory and the cache (~/.cache/skm-modsign).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export ANSIBLE_COLLECTIONS_PATH="$here/build/collections" PATH="$here/.venv/bin:$PATH"
export ANSIBLE_PYTHON_INTERPRETER="$here/.venv/bin/python" ANSIBLE_LOCALHOST_WARNING=0 ANSIBLE_INVENTORY_UNPARSED_WARNING=0
modules_dir=$(.venv/bin/python -m tests.lib.debian_kernel)
scratch=$(mktemp -d /tmp/skm-demo.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
echo "demo: copying $modules_dir to $scratch"
cp -r "$modules_dir/kernel" "$scratch/modules"
ansible-playbook -i localhost, -c local playbooks/demo_local.yml -e "demo_dir=$scratch"
