"""No tracked file names a path outside the clone, except ../shared beside it.

A clone must work on a new machine: anything it reads from elsewhere on the machine where it was written
(a local mirror, a home directory, the workspace around the clone) is missing there. The rules, over every
file `git ls-files` lists (text files; a tracked symlink by its target):

- absolute paths into the workspace or a home: ``/work``, ``/home/<name>``, and any ``.mirror`` directory;
- root's per-user state spelled out: ``/root/.cache``, ``/root/.local``, ``/root/.config`` (reach them
  through $HOME or the XDG variables). Other ``/root/...`` paths are not flagged: in this project they are
  paths on a managed host, in a VM or a container (the product runs as root there), and telling them apart
  from this machine's would need a list that every new VM test has to extend;
- a ``../`` chain that climbs above the repository root, taking the chain as relative to the file's own
  directory, or to the root for a Makefile and mk/*.mk (make runs there) and after ``pwd)/``,
  ``$(CURDIR)/``, ``$project/`` (the scripts' name for the root): allowed only into ``shared``. A chain that
  lands on a top-level system directory (usr, etc, lib, var, boot) is a path on a managed host relative to
  a directory deep inside it (DKMS's POST_BUILD), not a neighbour of the clone.

Not flagged: /tmp scratch a script makes itself, ~ and $HOME (the caches the bootstrap fills).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
THIS = pathlib.Path(__file__).resolve().relative_to(REPO).as_posix()

_NOT_PATH_START = r"(?<![\w.~$})\]])"    # a path that starts here, not the tail of a relative one
ABSOLUTE = [
    (re.compile(_NOT_PATH_START + r"/work(?=/|\b)"), "the workspace around the clone (/work)"),
    (re.compile(_NOT_PATH_START + r"/home/[\w.-]+"), "a home directory"),
    (re.compile(r"(?<![\w-])\.mirror(?=/|\b)"), "a local mirror directory"),
    (re.compile(_NOT_PATH_START + r"/root/\.(?:cache|local|config)(?=/|\b)"), "root's own state on this machine"),
]
# ../../x, ../.., or a lone .. ending a path ($here/..); a lone .. in prose is no path.
DOTDOT_CHAIN = re.compile(r"(?<![\w.])((?:\.\./)+(?:\.\.(?![\w./]))?|(?<=/)\.\.(?![\w./]))([^/\s\"'`),;:]*)")
FROM_ROOT = re.compile(r"(?:pwd\)|\$\(CURDIR\)|\$project|\$\{project\})/$")   # what precedes a root-relative chain
SHARED = "shared"
SYSTEM_DIRS = {"usr", "etc", "lib", "var", "boot"}


def _base_depth(path: str) -> int:
    """How many directories a relative path in this file may climb and stay in the repository."""
    name = path.rsplit("/", 1)[-1]
    if name == "Makefile" or name.endswith(".mk"):
        return 0
    return path.count("/")


def findings(path: str, text: str) -> list[str]:
    """Every path outside the repository that ``text`` (the content of tracked file ``path``) names."""
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{path}:{lineno}"
        for pattern, what in ABSOLUTE:
            for m in pattern.finditer(line):
                found.append(f"{where}: {what}: {m.group(0)!r}")
        for m in DOTDOT_CHAIN.finditer(line):
            climbs, target = m.group(1).count(".."), m.group(2)
            depth = 0 if FROM_ROOT.search(line, 0, m.start()) else _base_depth(path)
            if climbs > depth and target != SHARED and target not in SYSTEM_DIRS:
                found.append(f"{where}: climbs {climbs} above its directory, out of the repository: {m.group(0)!r}")
    return found


def tracked_files() -> list[tuple[str, str]]:
    """(path, text) for every tracked file: a text file's content, a symlink's target; binary files left out."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "-s"], capture_output=True, check=False)
    if listed.returncode:
        pytest.skip(f"not a git checkout (git ls-files: {listed.stderr.decode(errors='replace').strip()})")
    files = []
    for entry in listed.stdout.decode().split("\0"):
        if not entry:
            continue
        meta, path = entry.split("\t", 1)
        full = REPO / path
        if meta.startswith("120000"):
            files.append((path, os.readlink(full)))
        elif full.is_file():
            data = full.read_bytes()
            if b"\0" not in data:
                files.append((path, data.decode("utf-8", errors="replace")))
    return files


def test_no_tracked_file_names_a_path_outside_the_clone():
    files = [(path, text) for path, text in tracked_files() if path != THIS]
    assert len(files) > 100
    found = [f for path, text in files for f in findings(path, text)]
    assert found == [], "paths outside the repository (only ../shared may be named):\n" + "\n".join(found)


@pytest.mark.parametrize("path, line", [
    # what tests/images/build.sh and tests/roles/enforce/trees.py read before issue 16
    ("tests/images/build.sh", '  git -C "${SKM_GRUBBY_REPO:-/work/.mirror/fedora-riscv+grubby/repo}" show HEAD:grubby-bls'),
    ("tests/roles/enforce/trees.py", '        repo = os.environ.get("SKM_GRUBBY_REPO", "/work/.mirror/fedora-riscv+grubby/repo")'),
    ("scripts/x.sh", 'cp /home/alice/src/grubby-bls .'),
    ("scripts/x.sh", 'key=/root/.cache/skm/key.pem'),
    ("tests/x.py", 'CACHE = pathlib.Path("/root/.local/share/skm")'),
    ("scripts/x.sh", 'git -C ../.mirror/grubby show HEAD:grubby-bls'),
    ("tests/images/build.sh", 'f="$(cd "$here/../.." && pwd)/../../other/grubby-bls"'),
    ("tests/images/build.sh", 'f="$here/../../../linux/scripts/sign-file"'),
    ("mk/fleet.mk", '\tbash ../tools/run.sh'),
    ("Makefile", 'include ../common.mk'),
    ("README.md", 'see [the notes](../notes.md)'),
    ("scripts/x.sh", 'top=$(cd "$(dirname "$0")/../.." && pwd)'),
    ("Makefile", 'OTHER := $(CURDIR)/..'),
])
def test_paths_outside_the_clone_are_found(path, line):
    assert findings(path, line)


@pytest.mark.parametrize("path, line", [
    ("tests/images/build.sh", 'grubby_shared="$(cd "$here/../.." && pwd)/../shared/tools/grubby/grubby-bls"'),
    ("README.md", "Fedora's grubby is at `../shared/tools/grubby/grubby-bls`."),
    ("tests/fleet/fleet.sh", 'project=$(cd "$here/../.." && pwd)'),
    ("scripts/demo.sh", 'here=$(cd "$(dirname "$0")/.." && pwd)'),
    ("tests/images/build.sh", 'ln -sfn ../usr/lib/os-release "$root/etc/os-release"'),
    ("roles/dkms/README.md", '`POST_BUILD="../../../../../../usr/local/libexec/skm-modsign/dkms-post-build"`'),
    ("roles/report/defaults/main.yml", 'skm_report_dir: "{{ playbook_dir }}/../build/report"'),
    ("scripts/demo.sh", 'scratch=$(mktemp -d /tmp/skm-demo.XXXXXX)'),
    ("tests/images/build.sh", 'cache="${SKM_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skm-modsign/images}"'),
    ("tests/x.py", 'url = "https://example.org/work/mirror/x"; d = build / "work" / "y"; z = "$out/work/a"'),
    ("mk/quality.mk", '# also on Python 3.8 ... 3.13'),
    ("tests/vm/test_mok_vm.py", 'r = run(vm, {"certificate": "/root/fleet.der", "state": "query"})'),
    ("tests/fleet/fleet.sh", '-v "$state/id_ed25519.pub:/root/.ssh/authorized_keys:ro" \\'),
    ("README.md", "read lexically; a `..` component, or a link whose target lies elsewhere, is refused"),
])
def test_paths_inside_the_clone_pass(path, line):
    assert findings(path, line) == []
