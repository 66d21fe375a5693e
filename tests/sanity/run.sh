#!/usr/bin/env bash
# ansible-test sanity (and, with --units, ansible-test units) for skm.modsign.
#
# ansible-test wants the collection at .../ansible_collections/skm/modsign and judges every file it finds
# there, so this script assembles a clean copy: the files git knows (tracked, plus untracked ones that
# .gitignore does not exclude; deleted ones skipped), minus galaxy.yml's build_ignore, go to
# build/sanity/ansible_collections/skm/modsign. Nothing else (no .venv, build/, caches, pyc) reaches the tests.
#
# Mode: `--venv`. ansible-test creates one virtualenv per sanity test (cached in build/sanity-home) and
# installs its own pinned requirements there from PyPI (needs pip access once; reused afterwards).
# `--docker` is not available here; `--local` would need ansible-test's exact pinned pylint etc. in our
# .venv, which would fight with ansible-lint's pins.
#
# Python versions: the controller-side tests run with the .venv's Python (3.11); the compile and import
# tests also run for every target Python the pyenv install on this machine has (3.8 ... 3.13), so
# tests/config.yml's `python_requires: '>=3.8'` for modules is actually checked. A machine without them
# gets the 3.11 run only (ansible-test skips versions it cannot find and says so).
#
# Usage: tests/sanity/run.sh [extra ansible-test sanity args, e.g. --test pylint]
#        tests/sanity/run.sh --units [extra ansible-test units args]   (ansible-test units instead)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"

units=0
if [ "${1:-}" = "--units" ]; then units=1; shift; fi

venv_bin="$here/.venv/bin"
py_version=$("$venv_bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# Target interpreters for compile/import: pyenv's, when present.
for v in 3.8 3.9 3.10 3.12 3.13; do
  for d in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin; do
    [ -x "$d/python$v" ] && PATH="$PATH:$d" && break
  done
done
export PATH="$venv_bin:$PATH"

# ansible-test runs pip with a filtered environment (PATH, HOME, LC_ALL ...), so PIP_CERT and friends are
# lost. It keeps HOME: a private one under build/ holds a pip.conf with this machine's CA bundle (needed
# when PyPI is reached through a TLS-inspecting proxy), ansible-test's venv cache (~/.ansible/test/venv,
# reused between runs) and the pip bootstrap script, which ansible-test would download from a host we
# cannot reach (tests/sanity/get_pip.py stands in for it).
sanity_home="$here/build/sanity-home"
mkdir -p "$sanity_home/.config/pip" "$sanity_home/.ansible/test/cache"
cert=${PIP_CERT:-${SSL_CERT_FILE:-${REQUESTS_CA_BUNDLE:-}}}
{
  echo "[global]"
  [ -n "$cert" ] && echo "cert = $cert"
  [ -n "${PIP_INDEX_URL:-}" ] && echo "index-url = $PIP_INDEX_URL"
  echo "disable-pip-version-check = true"
} > "$sanity_home/.config/pip/pip.conf"
at_dir=$("$venv_bin/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')
pip_version=$(grep -o "pip='[0-9.]*'" "$at_dir/_internal/python_requirements.py" | head -1 | tr -dc '0-9.')
cp tests/sanity/get_pip.py "$sanity_home/.ansible/test/cache/get_pip_${pip_version//./_}.py"

root="$here/build/sanity"
dest="$root/ansible_collections/skm/modsign"
stage="$root/stage"
rm -rf "$stage"
mkdir -p "$stage" "$dest"
# The files a release would hold: git's list (tracked + untracked-not-ignored; deleted ones skipped)
# minus galaxy.yml's build_ignore (bench/, .ci/ ... are not part of the collection), matched the way
# ansible-galaxy collection build matches them (fnmatch on each file and each parent directory).
"$venv_bin/python" - "$stage" <<'PY'
import fnmatch, os, shutil, subprocess, sys
import yaml
dest = sys.argv[1]
ignore = (yaml.safe_load(open('galaxy.yml')) or {}).get('build_ignore') or []
names = subprocess.run(['git', 'ls-files', '-z', '-co', '--exclude-standard'], check=True,
                       capture_output=True).stdout.decode().split('\0')
for name in filter(None, names):
    parts = name.split('/')
    prefixes = ['/'.join(parts[:i]) for i in range(1, len(parts) + 1)]
    if any(fnmatch.fnmatch(p, pat) for p in prefixes for pat in ignore):
        continue
    if not (os.path.isfile(name) or os.path.islink(name)):
        continue
    target = os.path.join(dest, name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy2(name, target, follow_symlinks=False)
PY
# Into place; tests/output (ansible-test's delegation venv and results) survives between runs.
rsync -a --delete --exclude /tests/output/ --exclude /.git/ "$stage/" "$dest/"
rm -rf "$stage"

cd "$dest"
# ansible-test lists content with git, walking up to the nearest .git: give the copy its own (empty) repo
# so the work tree's .gitignore (which ignores build/) does not hide it. Untracked files count.
git init -q .
# ansible-test's own collection loader must see this tree, not the symlink under build/collections.
unset ANSIBLE_COLLECTIONS_PATH ANSIBLE_COLLECTIONS_PATHS

if [ "$units" = 1 ]; then
  echo "units: ansible-test units (tests/unit, Python $py_version, --local)"
  # --local: the unit tests need our .venv's libraries (cryptography, zstandard, hypothesis, atheris)
  # and the Debian kernel fixtures from tests/conftest.py, which a fresh venv would not have.
  exec ansible-test units --local --python "$py_version" --color no "$@"
fi
echo "sanity: ansible-test sanity in $dest (controller Python $py_version, --venv)"
exec env HOME="$sanity_home" ansible-test sanity --venv --color no "$@"
