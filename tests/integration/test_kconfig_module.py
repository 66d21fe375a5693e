"""skm_kconfig through real ansible-playbook, and the kernel's own Kconfig as the judge.

After skm_kconfig edits a config, Debian's linux-source-6.1 `make olddefconfig` (out of tree, O=) must keep
every value we set: Kconfig silently drops inconsistent or unknown settings, which is the failure to catch.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from ansible_collections.skm.modsign.plugins.module_utils import _kconfig as kconfig
from tests.lib.ansible_run import run_module
from tests.lib.kernel_source import kernel_source

CASES = {
    "rsa-sha256": {"key": "certs/signing_key.pem", "key_type": "rsa", "hash": "sha256", "sig_force": True,
                   "sig_all": True, "trusted_keys": "certs/fleet.pem"},
    "ecdsa-sha512-xz": {"key": "certs-local/current/signing_key.pem", "key_type": "ecdsa", "hash": "sha512",
                        "sig_force": True, "compress": "xz", "decompress": True,
                        "allow_missing_namespace_imports": True},
}


def four_times(args: dict) -> list[dict]:
    return [run_module("skm_kconfig", args, check=check, diff=True) for check in (True, False, True, False)]


@pytest.fixture(scope="module")
def olddefconfig(tmp_path_factory):
    source = kernel_source()
    out = tmp_path_factory.mktemp("kbuild")

    def run(config: pathlib.Path) -> dict:
        shutil.copy(config, out / ".config")
        subprocess.run(["make", "-s", "-C", str(source), f"O={out}", "ARCH=x86", "olddefconfig"], check=True,
                       capture_output=True)
        return kconfig.values(kconfig.parse_config((out / ".config").read_text()))
    return run


@pytest.mark.parametrize("case", sorted(CASES))
def test_debian_config_values_survive_olddefconfig(case, tmp_path, debian_kernel, olddefconfig):
    configs = tmp_path / "conf"
    configs.mkdir()
    for name in ("config.x86_64", "config.x86_64-lts"):   # two configs, one glob, like genkeys.py --config
        shutil.copy(debian_kernel.config, configs / name)
    original = (configs / "config.x86_64").read_bytes()
    args = dict(CASES[case], path=str(configs / "config.*"))
    check1, real1, check2, real2 = four_times(args)
    assert check1["changed"] and real1["changed"] and not check2["changed"] and not real2["changed"]
    assert (configs / "config.x86_64").read_bytes() == (configs / "config.x86_64-lts").read_bytes()
    assert len(real1["files"]) == 2 and all(f["changed"] for f in real1["files"])
    assert "--- before" in real1["_stdout"] or real1.get("diff")

    # Every line we did not set is byte for byte what Debian shipped.
    ours = {c["name"] for c in real1["files"][0]["changes"]}
    new_lines = [line for line in (configs / "config.x86_64").read_text().split("\n")
                 if not any(line.startswith(n + "=") or line == f"# {n} is not set" for n in ours)]
    old_lines = [line for line in original.decode().split("\n")
                 if not any(line.startswith(n + "=") or line == f"# {n} is not set" for n in ours)]
    assert new_lines == old_lines

    wanted = {c["name"]: c["after"] for c in real1["files"][0]["changes"]}
    after = olddefconfig(configs / "config.x86_64")
    lost = {n: (v, after.get(n)) for n, v in wanted.items() if after.get(n, "n") != v}
    assert not lost, f"the kernel's olddefconfig dropped or changed what we set: {lost}"


def test_backup_bad_input_and_read_only(tmp_path, debian_kernel):
    config = tmp_path / ".config"
    shutil.copy(debian_kernel.config, config)
    result = run_module("skm_kconfig", {"path": str(config), "hash": "sha512", "backup": True})
    backup = pathlib.Path(result["files"][0]["backup_file"])
    assert backup.read_bytes() == debian_kernel.config.read_bytes()

    not_config = tmp_path / "grub"
    not_config.write_text('GRUB_CMDLINE_LINUX="quiet"\n')
    before = not_config.read_bytes()
    bad = run_module("skm_kconfig", {"path": str(tmp_path / "*"), "hash": "sha256"})
    assert bad["failed"] and "not a kernel config" in bad["msg"] and str(not_config) in bad["msg"]
    assert not_config.read_bytes() == before
    assert config.read_bytes() != debian_kernel.config.read_bytes()   # from the first run only
    refused = run_module("skm_kconfig", {"path": str(config), "key_type": "ecdsa", "hash": "sha256"})
    assert refused["failed"] and "ECDSA" in refused["msg"]
    nothing = run_module("skm_kconfig", {"path": str(tmp_path / "nothing*"), "hash": "sha256"})
    assert nothing["failed"] and "no kernel config matches" in nothing["msg"]

    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copy(debian_kernel.config, ro / ".config")
    if subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(ro)]).returncode != 0:
        pytest.skip("cannot bind-mount read-only here (not root)")
    try:
        failed = run_module("skm_kconfig", {"path": str(ro / ".config"), "hash": "sha512"})
        assert failed["failed"] and "read-only" in failed["msg"]
        assert (ro / ".config").read_bytes() == debian_kernel.config.read_bytes()
    finally:
        subprocess.run(["umount", str(ro)])
