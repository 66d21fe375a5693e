"""Where the tests take Fedora's grubby from, and what they skip without it (issue 16).

Fedora's grubby-bls is a third-party test fixture beside the clone, ../shared/tools/grubby/grubby-bls (or the
file $SKM_GRUBBY names). Where it is absent, the rhel-like image is not built, its molecule hosts and the
grubby pytest cases are skipped, and each says why; nothing falls back to an image without grubby.

The scripts run here in a scratch copy of the clone's layout (clone/ and, or not, shared/ beside it). In the
molecule_run.sh cases `.venv/bin/molecule` is a stand-in that prints its arguments: what is under test is which
scenarios and hosts the script asks molecule for, not molecule.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.roles.enforce import trees

REPO = pathlib.Path(__file__).resolve().parents[2]
SKIP_REASON = "rhel-like host needs Fedora's grubby from ../shared/tools/grubby (absent"


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "SKM_GRUBBY"}
    env.update(extra)
    return env


@pytest.fixture()
def layout(tmp_path):
    """tmp/clone with the scripts under test; tmp/shared/tools/grubby/grubby-bls made by ``add_shared``."""
    clone = tmp_path / "clone"
    for rel in ("tests/images/build.sh", "scripts/molecule_run.sh", "extensions/molecule/site/molecule.yml",
                "extensions/molecule/enforce/molecule.yml", "extensions/molecule/kernel_build/molecule.yml"):
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, clone / rel)
    (clone / "tests/images/files").mkdir()
    venv = clone / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    (venv / "molecule").write_text('#!/bin/sh\necho "molecule-stand-in $*"\n')
    (venv / "molecule").chmod(0o755)
    return clone


def add_shared(clone: pathlib.Path, content: bytes = b"#!/bin/bash\n# grubby stand-in\n") -> pathlib.Path:
    grubby = clone.parent / "shared" / "tools" / "grubby" / "grubby-bls"
    grubby.parent.mkdir(parents=True, exist_ok=True)
    grubby.write_bytes(content)
    return grubby


def build_sh(clone, *args, **env):
    return subprocess.run(["bash", str(clone / "tests/images/build.sh"), *args], capture_output=True, text=True,
                          env=_env(**env), check=False)


def molecule_run(clone, *scenarios, **env):
    return subprocess.run(["bash", str(clone / "scripts/molecule_run.sh"), *scenarios], capture_output=True,
                          text=True, env=_env(**env), check=False)


# ------------------------------------------------------------------------------------------ where from --

def test_the_default_is_shared_beside_the_clone():
    assert trees.GRUBBY_SHARED == REPO.parent / "shared" / "tools" / "grubby" / "grubby-bls"
    found = build_sh(REPO, "--grubby")
    if found.returncode == 0:
        assert pathlib.Path(found.stdout.strip()).resolve() == trees.GRUBBY_SHARED.resolve()
    else:
        assert found.returncode == 1 and "../shared/tools/grubby (absent" in found.stderr


def test_build_sh_finds_shared_and_says_why_not(layout):
    absent = build_sh(layout, "--grubby")
    assert absent.returncode == 1 and absent.stdout == ""
    assert "Fedora's grubby from ../shared/tools/grubby (absent: no " in absent.stderr
    grubby = add_shared(layout)
    present = build_sh(layout, "--grubby")
    assert present.returncode == 0
    assert pathlib.Path(present.stdout.strip()).resolve() == grubby.resolve()


def test_skm_grubby_wins_and_must_name_a_file(layout, tmp_path):
    add_shared(layout)
    mine = tmp_path / "my-grubby"
    mine.write_text("#!/bin/bash\n")
    assert build_sh(layout, "--grubby", SKM_GRUBBY=str(mine)).stdout.strip() == str(mine)
    wrong = build_sh(layout, "--grubby", SKM_GRUBBY=str(tmp_path / "nothing"))
    assert wrong.returncode == 2 and "is not a readable file" in wrong.stderr


def test_trees_grubby_source(tmp_path, monkeypatch):
    monkeypatch.delenv("SKM_GRUBBY", raising=False)
    shared = tmp_path / "shared" / "tools" / "grubby" / "grubby-bls"
    script, why = trees.grubby_source(shared)
    assert script is None and why.startswith("Fedora's grubby from ../shared/tools/grubby (absent")
    shared.parent.mkdir(parents=True)
    shared.write_text("#!/bin/bash\n")
    assert trees.grubby_source(shared) == (shared, "")
    monkeypatch.setenv("SKM_GRUBBY", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="SKM_GRUBBY=.* is not a readable file"):
        trees.grubby_source(shared)


def test_rhel_like_recipe_hash_covers_its_grubby(layout):
    debian = build_sh(layout, "--recipe-hash", "debian12").stdout
    assert build_sh(layout, "--recipe-hash", "rhel-like").returncode == 1      # no grubby, no rhel-like recipe
    add_shared(layout, b"#!/bin/bash\n# one\n")
    one = build_sh(layout, "--recipe-hash", "rhel-like").stdout
    add_shared(layout, b"#!/bin/bash\n# two\n")
    two = build_sh(layout, "--recipe-hash", "rhel-like").stdout
    assert len({debian, one, two}) == 3 and all(len(h.strip()) == 12 for h in (debian, one, two))
    assert build_sh(layout, "--recipe-hash", "debian12").stdout == debian      # grubby is no part of the others


@pytest.mark.skipif(os.geteuid() != 0, reason="build.sh needs root before it looks at any image")
def test_build_sh_skips_rhel_like_without_grubby_and_builds_nothing(layout, tmp_path):
    skipped = build_sh(layout, "rhel-like", SKM_IMAGE_CACHE=str(tmp_path / "cache"))
    assert skipped.returncode == 0 and skipped.stdout == ""
    assert "build.sh: rhel-like: skipped: the rhel-like image needs Fedora's grubby from ../shared/tools/grubby " \
           "(absent" in skipped.stderr
    assert list((tmp_path / "cache").iterdir()) == []


# --------------------------------------------------------------------------------- molecule scenarios --

def test_without_grubby_site_runs_without_its_rhel_like_host(layout):
    run = molecule_run(layout, "site", "enforce", "kernel_build")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert f"molecule site: skipped host skm-site-rhel-like: {SKIP_REASON}" in "\n".join(lines)
    assert "molecule-stand-in test -s site --platform-name skm-site-dkms" in lines
    assert any(line.startswith("molecule enforce: skipped: its rhel-like host skm-enf-rhel-like needs Fedora's grubby")
               for line in lines)
    assert not any("test -s enforce" in line for line in lines)
    assert "molecule-stand-in test -s kernel_build" in lines
    assert lines[-1] == "molecule: skipped: enforce"


def test_with_grubby_every_host_runs(layout):
    add_shared(layout)
    run = molecule_run(layout, "site", "enforce")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0::2] == ["molecule-stand-in test -s site", "molecule-stand-in test -s enforce"]
    assert [line.split(" in ")[0] for line in lines[1::2]] == ["molecule site: passed", "molecule enforce: passed"]


def test_a_wrong_skm_grubby_stops_the_run(layout, tmp_path):
    run = molecule_run(layout, "site", SKM_GRUBBY=str(tmp_path / "nothing"))
    assert run.returncode == 2 and "is not a readable file" in run.stderr
    assert "molecule-stand-in" not in run.stdout
