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
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
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
        return kconfig.values(kconfig.parse_config((out / ".config").read_text())), out / ".config"
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
    # diff mode: one before/after per changed file, headed by its path; check mode reports the same changes.
    diffs = {d["before_header"]: d for d in real1["diff"]}
    assert sorted(diffs) == sorted(str(configs / n) for n in ("config.x86_64", "config.x86_64-lts"))
    assert diffs[str(configs / "config.x86_64")]["before"] == original.decode()
    assert diffs[str(configs / "config.x86_64")]["after"] == (configs / "config.x86_64").read_text()
    assert check1["files"] == real1["files"] and check1["diff"] == real1["diff"]
    assert check2["diff"] == [] and real2["files"][0]["changes"] == []

    # Every line we did not set is byte for byte what Debian shipped.
    ours = {c["name"] for c in real1["files"][0]["changes"]}
    new_lines = [line for line in (configs / "config.x86_64").read_text().split("\n")
                 if not any(line.startswith(n + "=") or line == f"# {n} is not set" for n in ours)]
    old_lines = [line for line in original.decode().split("\n")
                 if not any(line.startswith(n + "=") or line == f"# {n} is not set" for n in ours)]
    assert new_lines == old_lines

    wanted = {c["name"]: c["after"] for c in real1["files"][0]["changes"]}
    after, rewritten = olddefconfig(configs / "config.x86_64")
    lost = {n: (v, after.get(n)) for n, v in wanted.items() if after.get(n, "n") != v}
    assert not lost, f"the kernel's olddefconfig dropped or changed what we set: {lost}"
    # The config as the kernel rewrote it needs nothing more: skm_kconfig then olddefconfig then skm_kconfig
    # is not a change on every run.
    again = run_module("skm_kconfig", dict(args, path=str(rewritten)), check=True)
    assert not again["changed"], again["files"]


def test_key_file_must_be_of_the_key_type(tmp_path, debian_kernel, session_keys):
    config = tmp_path / ".config"
    shutil.copy(debian_kernel.config, config)
    p384 = session_keys("p384")   # made by openssl, not by us
    wrong = run_module("skm_kconfig", {"path": str(config), "key": str(p384.combined), "key_type": "rsa"})
    assert wrong["failed"] and "ecdsa-384 key, but key_type is rsa" in wrong["msg"] and str(p384.combined) in wrong["msg"]
    assert config.read_bytes() == debian_kernel.config.read_bytes()
    right = run_module("skm_kconfig", {"path": str(config), "key": str(p384.combined), "key_type": "ecdsa",
                                       "hash": "sha384"})
    assert right["changed"] and f'CONFIG_MODULE_SIG_KEY="{p384.combined}"\n' in config.read_text()


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
    if subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(ro)], check=False).returncode != 0:
        pytest.skip("cannot bind-mount read-only here (not root)")
    try:
        failed = run_module("skm_kconfig", {"path": str(ro / ".config"), "hash": "sha512"})
        assert failed["failed"] and "read-only" in failed["msg"]
        assert (ro / ".config").read_bytes() == debian_kernel.config.read_bytes()
    finally:
        subprocess.run(["umount", str(ro)], check=False)


SLOW = pytest.mark.skipif(not os.environ.get("SKM_SLOW"), reason="slow: make test-kernel-config")
MATRIX = [  # every hash 6.1 offers with each key type Kconfig allows; every compression; decompress where it can
    ("sha256", "rsa", "none"), ("sha384", "rsa", "gzip"), ("sha512", "rsa", "zstd"), ("sha256", "rsa", "xz"),
    ("sha384", "ecdsa", "xz"), ("sha512", "ecdsa", "none"),
]


@SLOW
@pytest.mark.parametrize("hash_name,key_type,compress", MATRIX)
def test_matrix_survives_olddefconfig(hash_name, key_type, compress, tmp_path, debian_kernel, olddefconfig):
    settings = kconfig.Settings(hash_name=hash_name, key_type=key_type, compress=compress,
                                decompress=compress in ("gzip", "xz"), sig_force=True, sig_all=False,
                                key="certs/fleet.pem", trusted_keys="certs/extra.pem",
                                allow_missing_namespace_imports=key_type == "ecdsa")
    text, changes = kconfig.edit(debian_kernel.config.read_bytes(), settings, "debian config")
    (tmp_path / "config").write_text(text)
    after, rewritten = olddefconfig(tmp_path / "config")
    lost = {c["name"]: (c["after"], after.get(c["name"])) for c in changes if after.get(c["name"], "n") != c["after"]}
    assert not lost, f"the kernel's olddefconfig dropped or changed what we set: {lost}"
    assert kconfig.edit(rewritten.read_text(), settings) == (rewritten.read_text(), [])


@SLOW
def test_sha3_on_61_is_what_olddefconfig_drops(tmp_path, debian_kernel, olddefconfig):
    """The premise of the SHA-3 refusal, shown by the kernel: 6.1's Kconfig has no MODULE_SIG_SHA3_*."""
    config = debian_kernel.config.read_text()
    with pytest.raises(ModSignError, match="Linux 6.1"):
        kconfig.edit(config, kconfig.Settings(hash_name="sha3-512"))
    headerless = "\n".join(line for line in config.split("\n") if "Kernel Configuration" not in line)
    text, _changes = kconfig.edit(headerless, kconfig.Settings(hash_name="sha3-512"))
    (tmp_path / "config").write_text(text)
    after, _path = olddefconfig(tmp_path / "config")
    assert "CONFIG_MODULE_SIG_SHA3_512" not in after and after["CONFIG_MODULE_SIG_HASH"] != '"sha3-512"'


@SLOW
def test_zstd_decompress_on_61_is_what_olddefconfig_drops(tmp_path, debian_kernel, olddefconfig):
    """The premise of the zstd-decompress refusal: 6.1's MODULE_DECOMPRESS knows gzip and xz only."""
    config = debian_kernel.config.read_text()
    settings = kconfig.Settings(compress="zstd", decompress=True)
    with pytest.raises(ModSignError, match="gzip and xz modules only"):
        kconfig.edit(config, settings)
    headerless = "\n".join(line for line in config.split("\n") if "Kernel Configuration" not in line)
    text, _changes = kconfig.edit(headerless, settings)
    (tmp_path / "config").write_text(text)
    after, _path = olddefconfig(tmp_path / "config")
    assert after["CONFIG_MODULE_COMPRESS_ZSTD"] == "y" and after.get("CONFIG_MODULE_DECOMPRESS", "n") == "n"
