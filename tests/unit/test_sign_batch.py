"""_sign_batch without Ansible: path expansion, controller mode agreeing with host mode, the write-step checks.

Modules are real Debian modules; signatures by other keys are made by the kernel's sign-file.
"""

from __future__ import annotations

import os
import pathlib
import struct
import subprocess

import pytest

from ansible_collections.skm.modsign.plugins.module_utils import _sign_batch as batch
from ansible_collections.skm.modsign.plugins.module_utils import _signing as signing
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._trailer import MAGIC, strip_signature
from tests.lib.module_tree import compress


def controller_round_trip(paths, signing_key, replace_foreign=False, check_mode=False, replace_tampered=False):
    """The three steps of controller mode, as the action plugin chains them."""
    cert = signing_key.certificate.der
    entries = batch.refuse_outside(batch.survey(paths, cert, signing_key.hash_name), paths)
    planned = batch.plan(entries, signing_key, replace_foreign, replace_tampered)
    failures = {}
    if not check_mode:
        wanted = [e["d"] for _o, e in planned if e is not None]
        requests = batch.write_requests(planned, batch.sign_digests(signing_key, wanted, workers=2))
        failures = batch.write_signatures(requests, cert, signing_key.hash_name, signing_key.use_skid, workers=2)
    return batch.outcomes_after_write(planned, failures)


@pytest.fixture()
def states(debian_kernel, debian_sample, session_keys, sign_file, tmp_path):
    """One module in each state relative to our rsa2048 key, twice (a plain and an xz copy)."""
    key = session_keys("rsa2048")
    ours = signing.SigningKey.from_files(str(key.key), str(key.cert), hash_name="sha256")
    ours_sha512 = signing.SigningKey.from_files(str(key.key), str(key.cert), hash_name="sha512")
    root = tmp_path / "m"
    root.mkdir()
    made = {}
    for index, name in enumerate(["unsigned", "current", "other_hash", "foreign", "bad", "corrupt"]):
        original = (debian_kernel.modules_dir / debian_sample[index]).read_bytes()
        payload = strip_signature(original)
        data = {"unsigned": payload, "current": ours.sign_payload(payload),
                "other_hash": ours_sha512.sign_payload(payload), "foreign": original,
                "corrupt": payload + struct.pack(">5B3sI", 0, 0, 2, 0, 0, b"\0\0\0", 1 << 30) + MAGIC,  # lying trailer
                }.get(name)
        if name == "bad":
            signed = bytearray(ours.sign_payload(payload))
            signed[200] ^= 0x01
            data = bytes(signed)
        for suffix in ("", ".xz"):
            path = root / f"{name}.ko{suffix}"
            path.write_bytes(compress(data, ".xz") if suffix else data)
            made[path] = name
    return ours, made


def statuses(outcomes):
    return {pathlib.Path(o.path).name: o.status for o in outcomes}


@pytest.mark.parametrize("replace_foreign,replace_tampered", [(False, False), (True, False), (False, True)])
def test_controller_mode_decides_like_host_mode(states, replace_foreign, replace_tampered):
    key, made = states
    paths = sorted(str(p) for p in made)
    host = signing.sign_module_files(paths, key, replace_foreign, check_mode=True, workers=1,
                                     replace_tampered=replace_tampered)
    controller = controller_round_trip(paths, key, replace_foreign, check_mode=True, replace_tampered=replace_tampered)
    assert statuses(controller) == statuses(host)
    assert [o.signer for o in controller] == [o.signer for o in host]
    assert [o.tampered for o in controller] == [o.tampered for o in host]
    expected = {"unsigned": "signed", "current": "already_signed", "other_hash": "replaced",
                "foreign": "replaced" if replace_foreign else "foreign",
                "bad": "replaced" if replace_tampered else "tampered", "corrupt": "failed"}
    assert statuses(controller) == {p.name: expected[n] for p, n in made.items()}


def test_controller_writes_the_same_bytes_as_host_mode(states, tmp_path):
    key, made = states
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in made:
        (copy / path.name).write_bytes(path.read_bytes())
    host = signing.sign_module_files(sorted(str(p) for p in made), key, True, workers=1)
    controller = controller_round_trip(sorted(str(p) for p in copy.iterdir()), key, True)
    assert statuses(controller) == statuses(host)
    for path in made:
        assert (copy / path.name).read_bytes() == path.read_bytes(), path.name   # RSA: deterministic
    again = controller_round_trip(sorted(str(p) for p in copy.iterdir()), key, True)
    assert {o.status for o in again} == {"already_signed", "tampered", "failed"}


def test_write_step_refuses_a_module_changed_after_the_survey(states):
    key, made = states
    path = next(p for p, n in made.items() if n == "unsigned" and p.suffix == ".ko")
    entries = batch.survey([str(path)], key.certificate.der, key.hash_name)
    planned = batch.plan(entries, key, False)
    requests = batch.write_requests(planned, batch.sign_digests(key, [entries[0]["d"]], workers=1))
    data = bytearray(path.read_bytes())
    data[300] ^= 0xFF
    st = path.stat()
    with open(path, "r+b") as handle:   # same inode, same size, mtime put back: only the digest tells
        handle.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    failures = batch.write_signatures(requests, key.certificate.der, key.hash_name)
    assert "changed since its digest was taken" in failures[str(path)]
    assert path.read_bytes() == bytes(data)


@pytest.mark.parametrize("host_has_cryptography", [True, False])
def test_survey_sends_no_module_bytes_and_little_else(states, monkeypatch, host_has_cryptography):
    key, made = states
    monkeypatch.setattr(batch.keys, "HAS_CRYPTOGRAPHY", host_has_cryptography)
    paths = sorted(made)
    entries = batch.survey([str(p) for p in paths], key.certificate.der, key.hash_name)
    for entry in entries:
        assert len(repr(entry)) < 1024, entry
    # With cryptography the host checks our own signatures itself and sends only the path for a valid one.
    expected = {"unsigned": "unsigned", "current": "current" if host_has_cryptography else "ours",
                "other_hash": "ours", "foreign": "unknown_key", "bad": "ours", "corrupt": "failed"}
    assert [e["s"] for e in entries] == [expected[made[p]] for p in paths]
    assert all(len(repr(e)) < 200 for e in entries if e["s"] == "current")
    planned = batch.plan(entries, key, False)
    assert statuses(o for o, _e in planned) == statuses(signing.sign_module_files([str(p) for p in paths], key,
                                                                                  check_mode=True, workers=1))


def test_expand_paths(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.ko", "a/b/y.ko.xz", "a/b/z.ko.zst", "a/b/notes.txt", "a/w.ko.gz"):
        (tmp_path / name).write_bytes(b"")

    def names(paths):
        return sorted(str(pathlib.Path(p).relative_to(tmp_path)) for p in paths)
    assert names(batch.expand_paths([str(tmp_path / "a")])) == ["a/b/y.ko.xz", "a/b/z.ko.zst", "a/w.ko.gz", "a/x.ko"]
    assert names(batch.expand_paths([str(tmp_path / "a/**/*.ko.*")])) == ["a/b/y.ko.xz", "a/b/z.ko.zst", "a/w.ko.gz"]
    assert names(batch.expand_paths([str(tmp_path / "a/b/notes.txt"), str(tmp_path / "a/x.ko")])) == \
        ["a/b/notes.txt", "a/x.ko"]
    assert batch.expand_paths([str(tmp_path / "none*")]) == []
    (tmp_path / "weak").mkdir()
    (tmp_path / "weak" / "x.ko").symlink_to(tmp_path / "a" / "x.ko")   # RHEL weak-updates style
    assert names(batch.expand_paths([str(tmp_path / "weak"), str(tmp_path / "a/x.ko")])) == ["a/x.ko"]
    with pytest.raises(ModSignError, match="no such file"):
        batch.expand_paths([str(tmp_path / "missing.ko")])


def test_summary_failure_message_and_diff():
    outcomes = [signing.Outcome("/m/a.ko", "signed"), signing.Outcome("/m/b.ko", "already_signed"),
                signing.Outcome("/m/c.ko", "foreign", signer="signed by an unknown key (x)"),
                signing.Outcome("/m/d.ko", "replaced", signer="signed by an unknown key (y)"),
                signing.Outcome("/m/e.ko", "failed", "corrupt xz stream")]
    result = batch.summarize(outcomes)
    assert result["counts"] == {"signed": 1, "replaced": 1, "already_signed": 1, "foreign": 2, "tampered": 0,
                                "failed": 1, "total": 5}
    assert result["changed"]
    assert [f["action"] for f in result["foreign"]] == ["left", "replaced"]
    assert batch.failure_message(result) == "1 of 5 modules failed: /m/e.ko: corrupt xz stream"
    diff = batch.diff(result, check_mode=True)
    assert diff["before"] == "/m/a.ko: unsigned\n/m/d.ko: signed by an unknown key (y)\n"
    assert diff["after"] == "/m/a.ko: signed\n/m/d.ko: signed\n"
    assert batch.failure_message(batch.summarize(outcomes[:4])) is None


def test_sign_file_agrees_with_the_write_step(states, sign_file, session_keys, tmp_path):
    key, made = states
    path = next(p for p, n in made.items() if n == "unsigned" and p.suffix == ".ko")
    reference = tmp_path / "ref.ko"
    reference.write_bytes(path.read_bytes())
    test_key = session_keys("rsa2048")
    subprocess.run([sign_file, "sha256", str(test_key.key), str(test_key.cert), str(reference)], check=True)
    controller_round_trip([str(path)], key)
    assert path.read_bytes() == reference.read_bytes()


def test_skid_signer_id_matches_sign_file_k_in_both_modes(debian_kernel, debian_sample, session_keys, sign_file,
                                                          tmp_path):
    """signer_id=skid: the PKCS#7 names the signer by subjectKeyIdentifier, as `sign-file -k` does."""
    key = session_keys("rsa2048")
    skid_key = signing.SigningKey.from_files(str(key.key), str(key.cert), hash_name="sha256", use_skid=True)
    payload = strip_signature((debian_kernel.modules_dir / debian_sample[5]).read_bytes())
    host_path, ctrl_path, ref = tmp_path / "host.ko", tmp_path / "ctrl.ko", tmp_path / "ref.ko"
    for path in (host_path, ctrl_path, ref):
        path.write_bytes(payload)
    subprocess.run([sign_file, "-k", "sha256", str(key.key), str(key.cert), str(ref)], check=True)
    assert signing.sign_module_file(str(host_path), skid_key).status == "signed"
    assert [o.status for o in controller_round_trip([str(ctrl_path)], skid_key)] == ["signed"]
    assert host_path.read_bytes() == ref.read_bytes() == ctrl_path.read_bytes()
    assert [o.status for o in controller_round_trip([str(ctrl_path)], skid_key)] == ["already_signed"]


def test_controller_signs_only_what_the_task_path_names():
    """The lexical rules of expand_paths, as the controller applies them to a host's survey."""
    patterns = ["/lib/modules/6.1.0/updates", "/opt/drv/*.ko*", "/srv/m/**/*.ko", "/x/drv[1].ko"]
    allowed = ["/lib/modules/6.1.0/updates/dkms/a.ko", "/lib/modules/6.1.0/updates/b.ko.xz", "/opt/drv/c.ko.zst",
               "/srv/m/d.ko", "/srv/m/1/2/e.ko", "/x/drv[1].ko", "/x/drv1.ko", "/lib/modules/6.1.0/updates"]
    refused = ["/etc/shadow", "/lib/modules/6.1.0/updates/../../../etc/x.ko", "/lib/modules/6.1.0/updates/notes",
               "/lib/modules/6.1.0/updates-evil/a.ko", "/opt/drv/sub/c.ko", "/srv/m/d.ko.xz", "", "/x/drv2.ko",
               "lib/modules/6.1.0/updates/a.ko"]
    assert [p for p in allowed if batch.outside_request(p, patterns) is not None] == []
    assert [p for p in refused if batch.outside_request(p, patterns) is None] == []
    assert batch.outside_request("/m/./a.ko", ["/m//"]) is None
    assert batch.outside_request("/anything/x.ko", ["/"]) is None
    # A glob that matches a directory takes the modules under it, as expand_paths walks it.
    assert batch.outside_request("/lib/modules/6.1.0/extra/a/b.ko", ["/lib/modules/*/extra"]) is None
    entries = [{"p": "/srv/m/d.ko", "s": "unsigned"}, {"p": "/etc/x.ko", "s": "unsigned"}, "junk"]
    checked = batch.refuse_outside(entries, patterns)
    assert [e["s"] for e in checked] == ["unsigned", "failed", "failed"]
    assert "outside the task's path" in checked[1]["r"] and checked[2]["r"] == "malformed survey entry"


def test_modinfo_matches_kmod(debian_kernel, debian_sample):
    from ansible_collections.skm.modsign.plugins.module_utils._modinfo import modinfo
    for rel in debian_sample[:4]:
        path = debian_kernel.modules_dir / rel
        expected = {field: subprocess.run(["modinfo", "-F", field, str(path)], capture_output=True, text=True,
                                          check=True).stdout.rstrip("\n") for field in ("name", "vermagic")}
        assert modinfo(strip_signature(path.read_bytes())) == expected
    assert modinfo(b"not an ELF file") == {} and modinfo(b"\x7fELF\x02\x01" + b"\xff" * 60) == {}
