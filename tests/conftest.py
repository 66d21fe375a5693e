"""Shared pytest set-up: the collection on sys.path, test keys, Debian's kernel, sign-file."""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
COLLECTIONS = REPO / "build" / "collections"
_link = COLLECTIONS / "ansible_collections" / "skm" / "modsign"
if not _link.exists():
    _link.parent.mkdir(parents=True, exist_ok=True)
    _link.symlink_to(REPO)
sys.path.insert(0, str(COLLECTIONS))
sys.path.insert(0, str(REPO))

from tests.lib.debian_kernel import SIGN_FILE, debian_kernel as _debian_kernel  # noqa: E402
from tests.lib.keys import make_key  # noqa: E402


@pytest.fixture(scope="session")
def debian_kernel():
    return _debian_kernel()


@pytest.fixture(scope="session")
def sign_file():
    assert os.access(SIGN_FILE, os.X_OK), f"{SIGN_FILE} missing: run scripts/bootstrap.sh (linux-kbuild-6.1)"
    return SIGN_FILE


@pytest.fixture(scope="session")
def session_keys(tmp_path_factory):
    """One key of each supported kind for the whole session (RSA-4096 takes a while to make)."""
    base = tmp_path_factory.mktemp("keys")
    cache = {}

    def get(kind: str, passphrase: str | None = None):
        if (kind, passphrase) not in cache:
            cache[(kind, passphrase)] = make_key(base / f"{kind}-{bool(passphrase)}", kind, passphrase)
        return cache[(kind, passphrase)]
    return get


@pytest.fixture(scope="session")
def debian_sample(debian_kernel):
    """A deterministic spread of ~24 real Debian modules (paths relative to the modules dir)."""
    modules = debian_kernel.modules()
    step = max(1, len(modules) // 24)
    return [m.relative_to(debian_kernel.modules_dir) for m in modules[::step]][:24]
