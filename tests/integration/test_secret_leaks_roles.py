"""Secret-leak tests for the roles: signing_key, dkms and mok, chained as playbooks/site.yml chains them.

One play per key mode (host, controller, shared) on localhost, the key with a passphrase, run three times
through real ansible-playbook at -vvvv (tests/lib/secret_leaks.py, shared with the module tests):
1. --diff: makes the key, installs DKMS signing and signs two unsigned Debian modules, stages the MOK request;
2. --check --diff over that (the paths that read the existing encrypted key; must report no change);
3. a failure path with ignore_errors applied to every role: the wrong passphrase for the key (skm_genkey
   refuses to read it) and for DKMS's re-signing (skm_sign fails), and a MOK password too long for the
   trust_mok change it asks for (mokutil's 8-16 characters).
In host mode the sign_file wrapper the dkms role installs for DKMS is also run on a module, as DKMS would run
it (passphrase from the role's root-only file into KBUILD_SIGN_PIN).
Searched, for the passphrase, the wrong passphrase, the MOK password and every form of every private key the
runs made (tests/lib/secret_leaks.Secrets): stdout and stderr (the default callback at -vvvv shows every task's
arguments, result and diff), the registered results (written out as JSON), ANSIBLE_LOG_PATH, every file left in
the run's TMPDIR and Ansible's temp dirs and the key, DKMS and EFI directories (the key files themselves and the
dkms role's passphrase file excepted: that is where they belong), and every process's argument list.

Where the real system is touched, it is kept from it: mokutil works on a directory of UEFI variables in
efivarfs' format (EFIVARFS_PATH, as tests/fleet/README.md "EFI-like hosts" describes for the images), and the
play runs in a private mount namespace whose /etc/dkms is a copy (the dkms role writes its drop-in there), so
nothing of it reaches the machine or tests/integration/test_dkms_role.py running next to it. The real dkms
(3.0.10) is asked its version, so the role takes its native-signing path.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import secrets
import shutil
import subprocess

import pytest
import yaml

from tests.lib.secret_leaks import (Capture, RunPlaces, Secrets, assert_no_leaks, capture_run, read_files,
                                    unsigned_module_copies, watched_cmdlines)

EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mokutil")
                                or not shutil.which("dkms"),
                                reason="needs root (root-owned key files, a private mount namespace), "
                                       "unshare, mokutil and dkms (scripts/bootstrap.sh installs them)")


def efi_variables(directory: pathlib.Path) -> pathlib.Path:
    """What tests/images/files/skm-efi-like writes: SecureBoot=1, SetupMode=0, in efivarfs' format."""
    directory.mkdir(parents=True)
    (directory / f"SecureBoot-{EFI_GLOBAL}").write_bytes(b"\x06\x00\x00\x00\x01")
    (directory / f"SetupMode-{EFI_GLOBAL}").write_bytes(b"\x06\x00\x00\x00\x00")
    return directory


def site_play(root: pathlib.Path, mode: str, results: pathlib.Path, failing: bool = False) -> list[dict]:
    """signing_key, dkms and mok wired as playbooks/site.yml wires them; the results written out as JSON."""
    def role(name: str, **variables) -> dict:
        task = {"name": f"role {name}", "ansible.builtin.include_role": {"name": f"skm.modsign.{name}"}}
        if variables:
            task["vars"] = variables
        if failing:
            task["ansible.builtin.include_role"]["apply"] = {"ignore_errors": True}
        return task

    controller = mode == "controller"
    collect = ("{{ {'genkey': skm_signing_key_generated | default(None), 'dkms_hook': skm_dkms_hook | default(None),"
               " 'dkms_resign': __skm_dkms_resign | default(None), 'mok': skm_mok_result | default(None),"
               " 'private_key': skm_signing_key_private_key | default(None)} | to_json }}")
    return [{
        "name": f"site roles, {mode} key mode", "hosts": "localhost", "gather_facts": False,
        "environment": {"EFIVARFS_PATH": f"{root / 'efivars'}/"},
        "vars": {
            "skm_signing_key_mode": mode,
            "skm_signing_key_dir": str(root / "host-keys"),
            "skm_signing_key_controller_dir": str(root / "controller-keys"),
            "skm_signing_key_type": "rsa", "skm_signing_key_size": 2048,
            "skm_signing_key_passphrase": "{{ leak_wrong if leak_failing else leak_passphrase }}",
            "leak_failing": failing,
        },
        "tasks": [
            role("signing_key"),
            role("dkms",
                 skm_dkms_key_mode=mode,
                 skm_dkms_private_key="{{ skm_signing_key_controller_key if skm_signing_key_mode == 'controller' "
                                      "else skm_signing_key_private_key }}",
                 skm_dkms_certificate="{{ skm_signing_key_controller_certificate if skm_signing_key_mode == "
                                      "'controller' else skm_signing_key_certificate }}",
                 skm_dkms_key_passphrase="{{ skm_signing_key_passphrase | default('', true) }}",
                 skm_dkms_hash="{{ skm_signing_key_hash }}",
                 skm_dkms_libexec_dir=str(root / "libexec"),
                 skm_dkms_passphrase_file=str(root / "dkms-pass" / "dkms-signing-key.pass"),
                 skm_dkms_tree=str(root / "dkms-tree"),
                 skm_dkms_resign_paths=[str(root / "modules")]),
            role("mok",
                 skm_mok_certificate="{{ skm_signing_key_certificate_der }}",
                 skm_mok_password="{{ leak_mok_password }}",
                 skm_mok_when_unsupported="fail",
                 **({"skm_mok_trust_mok": True} if failing else {})),
            {"name": "write the registered results", "ansible.builtin.copy": {
                "content": collect, "dest": str(results), "mode": "0600"},
             "check_mode": False, "changed_when": False},
        ],
    }]


def in_private_etc_dkms(etc_dkms: pathlib.Path):
    """Run a command in a private mount namespace with ``etc_dkms`` on /etc/dkms (no secret on the command)."""
    def wrap(cmd: list[str]) -> list[str]:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$0" /etc/dkms && exec "$@"', str(etc_dkms), *cmd]
    return wrap


def recap_changed(stdout: bytes) -> int:
    match = re.search(rb"localhost\s*: ok=\d+\s+changed=(\d+)", stdout)
    assert match, stdout[-2000:].decode()
    return int(match.group(1))


def run_wrapper(root: pathlib.Path, module: pathlib.Path, key: pathlib.Path, cert: pathlib.Path) -> Capture:
    """The dkms role's sign_file wrapper as DKMS 3 runs it on a module it built: HASH KEY CERT MODULE."""
    with watched_cmdlines() as seen:
        proc = subprocess.run([str(root / "libexec" / "dkms-sign-file"), "sha512", str(key), str(cert), str(module)],
                              capture_output=True, env=dict(os.environ, TMPDIR=str(root / "run" / "tmp")),
                              check=False)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    return Capture("dkms sign_file wrapper", proc.returncode, proc.stdout, proc.stderr, set(seen),
                   read_files([root / "run" / "tmp", module.parent]), [])


@pytest.mark.parametrize("mode", ["host", "controller", "shared"])
def test_site_roles_leak_nothing(mode, debian_kernel, debian_sample, tmp_path):
    root = tmp_path
    unsigned_module_copies(debian_kernel, debian_sample[1:3], root / "modules")
    efi_variables(root / "efivars")
    shutil.copytree("/etc/dkms", root / "etc-dkms", symlinks=True)
    places = RunPlaces(root / "run")
    variables = places.write_input("secrets.yml", {
        "leak_passphrase": "pp-" + secrets.token_urlsafe(24),
        "leak_wrong": "wrong-" + secrets.token_urlsafe(16),
        "leak_mok_password": "mok-" + secrets.token_urlsafe(18),   # 28 characters: too long for trust_mok
    })
    play = places.write_input("site.yml", site_play(root, mode, places.results))
    failing = places.write_input("site-failing.yml", site_play(root, mode, places.results, failing=True))
    workdirs = [root / name for name in ("host-keys", "controller-keys", "libexec", "dkms-pass", "dkms-tree",
                                         "efivars", "etc-dkms", "modules")]
    wrap = in_private_etc_dkms(root / "etc-dkms")

    def run(label, playbook, *args):
        return capture_run(places, playbook, variables, label, args, workdirs, wrap)

    first = run("first run (--diff)", play, "--diff")
    assert first.returncode == 0, first.stdout[-4000:].decode() + first.stderr[-2000:].decode()
    made = json.loads(places.results.read_text())
    checked = run("second run (--check --diff)", play, "--check", "--diff")
    assert checked.returncode == 0, checked.stdout[-4000:].decode()
    assert recap_changed(checked.stdout) == 0, "check mode after the first run would change something"
    captures = [first, checked]
    if mode != "controller":
        # Before the failing run, which gives DKMS the wrong passphrase.
        # DKMS 3 calls the wrapper for each module it builds; the passphrase goes through the root-only file.
        passfile = root / "dkms-pass" / "dkms-signing-key.pass"
        assert oct(passfile.stat().st_mode & 0o777) == "0o600"
        wrapped = unsigned_module_copies(debian_kernel, debian_sample[3:4], root / "dkms-built")
        module = next(wrapped.iterdir())
        current = pathlib.Path(made["private_key"]).parent
        captures.append(run_wrapper(root, module, current / "signing_key.key", current / "signing_key.crt"))
        assert module.read_bytes().endswith(b"~Module signature appended~\n")

    failed = run("failure paths (wrong passphrase, MOK password too long for trust_mok)", failing, "--diff")
    failures = json.loads(places.results.read_text())
    captures.append(failed)

    # What the runs did, so that the search covers the real paths: a key made, DKMS's native signing installed
    # (host and shared modes) and both modules signed, the MOK request staged; in the failing run each role failed.
    assert made["genkey"]["changed"] is True
    assert made["dkms_hook"] == ("controller" if mode == "controller" else "native")
    assert len(made["dkms_resign"]["signed"]) == 2
    assert made["mok"]["state"] == "pending" and made["mok"]["changed"] is True
    assert (root / "efivars" / "MokNew-605dab50-e046-4300-abb6-3dd810dd8b23").exists()
    assert failures["genkey"]["failed"] is True
    assert failures["dkms_resign"]["failed"] is True
    assert failures["mok"]["failed"] is True and "trust_mok" in failures["mok"]["msg"]

    found = Secrets()
    secret_values = yaml.safe_load(variables.read_text())
    found.text("passphrase", secret_values["leak_passphrase"])
    found.text("wrong passphrase", secret_values["leak_wrong"])
    found.text("MOK password", secret_values["leak_mok_password"])
    key_files = sorted(p for p in [*(root / "host-keys").rglob("signing_key.*"),
                                   *(root / "controller-keys").rglob("signing_key.*")]
                       if p.suffix in (".key", ".pem") and not p.is_symlink())
    assert key_files, "no key was made"
    for path in key_files:
        if path.suffix == ".key":
            found.private_key(f"private key {path.relative_to(root)}", path.read_bytes(),
                              secret_values["leak_passphrase"])
    allowed = key_files + ([root / "dkms-pass" / "dkms-signing-key.pass"] if mode != "controller" else [])
    assert_no_leaks(captures, found, allowed)
