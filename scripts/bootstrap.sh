#!/usr/bin/env bash
# Install what the demo and the tests need: Debian packages (scripts/apt-packages.txt)
# and a Python venv in .venv with requirements-dev.txt. Idempotent and quick once done.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

mapfile -t wanted < <(grep -v '^\s*#' scripts/apt-packages.txt | awk 'NF{print $1}')
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=.venv/.requirements.sha256
want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: preparing .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

# The collection as Ansible finds it: build/collections/ansible_collections/skm/modsign -> this tree.
mkdir -p build/collections/ansible_collections/skm
ln -sfn "$here" build/collections/ansible_collections/skm/modsign
