"""The release path: `ansible-galaxy collection build`, `install` into an empty path, then a playbook
that names everything by FQCN runs from that installed copy (not from the work tree's symlink).

Oracles: ansible-galaxy (its MANIFEST/FILES and install), ansible-doc (lists and locates the modules),
kmod's modinfo (reads the signature our installed skm_sign wrote).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import tarfile

import pytest
import yaml

from ansible_collections.skm.modsign.plugins.module_utils._trailer import strip_signature
from tests.lib.ansible_run import ansible_env, bin_path, run_playbook
from tests.lib.module_tree import modinfo_signature

REPO = pathlib.Path(__file__).resolve().parents[2]
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("skm_*.py"))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """(tarball, installed collections path) built from the work tree."""
    base = tmp_path_factory.mktemp("galaxy")
    subprocess.run([bin_path("ansible-galaxy"), "collection", "build", "--output-path", str(base), str(REPO)],
                   check=True, capture_output=True, text=True, env=ansible_env())
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    tarball = base / f"skm-modsign-{version}.tar.gz"
    assert tarball.is_file(), sorted(base.iterdir())
    installed = base / "installed"
    installed.mkdir()
    assert not any(installed.iterdir())
    # With the work tree's build/collections in the path, galaxy would call it "already installed".
    subprocess.run([bin_path("ansible-galaxy"), "collection", "install", "--offline", "-p", str(installed),
                    str(tarball)], check=True, capture_output=True, text=True,
                   env=ansible_env(only_installed(installed)))
    manifest = json.loads((installed / "ansible_collections" / "skm" / "modsign" / "MANIFEST.json").read_text())
    assert manifest["collection_info"]["version"] == version
    return tarball, installed


def only_installed(installed: pathlib.Path) -> dict:
    """Ansible finds skm.modsign only in the installed copy, not in build/collections (the work tree).
    (The `ansible` package's collections on sys.path stay visible: the json callback is ansible.posix's.)"""
    return {"ANSIBLE_COLLECTIONS_PATH": str(installed)}


def test_tarball_holds_the_collection_and_nothing_private(release):
    tarball = release[0]
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("MANIFEST.json"))
        contents = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"]) == ("skm", "modsign")
    for module in MODULES:
        assert f"plugins/modules/{module}.py" in names
    assert "meta/runtime.yml" in names and "meta/execution-environment.yml" in names
    for ignored in (".venv", "build", ".ci", "bench", ".git", ".pytest_cache"):
        assert not [n for n in names if n == ignored or n.startswith(ignored + "/")], ignored
    private = [name for name, data in contents if b"PRIVATE KEY-----" in data and not name.endswith(".py")]
    assert not private, f"private key material in the release: {private}"


def test_ansible_doc_lists_and_finds_every_module_in_the_installed_copy(release):
    installed = release[1]
    env = ansible_env(only_installed(installed))
    listed = json.loads(subprocess.run([bin_path("ansible-doc"), "-l", "skm.modsign", "--json"], check=True,
                                       capture_output=True, text=True, env=env).stdout)
    assert sorted(name.split(".")[-1] for name in listed) == MODULES
    docs = json.loads(subprocess.run([bin_path("ansible-doc"), "--json", *[f"skm.modsign.{m}" for m in MODULES]],
                                     check=True, capture_output=True, text=True, env=env).stdout)
    for module in MODULES:
        doc = docs[f"skm.modsign.{module}"]["doc"]
        assert pathlib.Path(doc["filename"]).is_relative_to(installed), doc["filename"]
        assert doc["short_description"] and doc["options"] is not None


def test_fqcn_playbook_runs_from_the_installed_copy(release, debian_kernel, debian_sample, tmp_path):
    installed = release[1]
    module = tmp_path / "scratch" / pathlib.Path(str(debian_sample[0])).name
    module.parent.mkdir()
    module.write_bytes(strip_signature((debian_kernel.modules_dir / debian_sample[0]).read_bytes()))
    play = [{
        "name": "skm.modsign from the installed release",
        "hosts": "localhost", "gather_facts": False,
        "tasks": [
            {"name": "A signing key", "skm.modsign.skm_genkey": {
                "path": str(tmp_path / "keys"), "key_type": "ecdsa", "key_size": 256, "hash": "sha256",
                "subject": {"CN": "skm galaxy check"}}, "register": "key"},
            {"name": "Sign the scratch module", "skm.modsign.skm_sign": {
                "path": [str(module)], "key": "{{ key.private_key }}", "cert": "{{ key.certificate }}",
                "hash": "sha256"}, "register": "signed"},
            {"name": "Audit it against our certificate", "skm.modsign.skm_module_info": {
                "path": [str(module.parent)], "trusted_certs": ["{{ key.certificate }}"],
                "builtin_certs": False}, "register": "audit"},
            {"name": "The audit trusts it", "ansible.builtin.assert": {
                "that": ["signed is changed", "audit.all_trusted", "audit.summary.total == 1"]}},
        ],
    }]
    playbook = tmp_path / "release.yml"
    playbook.write_text(yaml.safe_dump(play))
    proc = run_playbook(playbook, env=only_installed(installed))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    tasks = json.loads(proc.stdout)["plays"][0]["tasks"]
    assert [t["hosts"]["localhost"].get("failed", False) for t in tasks] == [False] * 4
    signature = modinfo_signature(module)
    assert signature["signer"] == "skm galaxy check"
    assert signature["sig_hashalgo"] == "sha256"
