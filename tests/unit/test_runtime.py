"""_runtime's parsers and readers on real captures (tests/unit/captured_runtime) and on bad input.

Captures: ``firecracker-6.18`` is this development machine (a Firecracker VM: no module support, no EFI,
empty builtin keyring), recorded by ``python -m tests.runtime.capture_host``; ``debian-qemu`` is Debian's
stock 6.1 kernel booted under qemu + OVMF with modules loaded by tests/runtime (make runtime-capture),
with the answer skm_kernel_facts gave inside that guest (expected.json). Commands are replayed from the
recorded output (commands.json); a command that was not recorded is "not installed".
"""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest

from ansible_collections.skm.modsign.plugins.module_utils import _runtime as rt

CAPTURED = pathlib.Path(__file__).resolve().parent / "captured_runtime"


def replay(commands: dict):
    def run(argv):
        return tuple(commands.get(" ".join(argv), (127, "", "%s: not installed" % argv[0])))
    return run


def captured(name: str, tmp_path=None):
    root = CAPTURED / name
    if tmp_path is not None:
        shutil.copytree(root, tmp_path / name)
        root = tmp_path / name
    commands = json.loads((root / "commands.json").read_text())
    return root, rt.Prefixes(str(root / "proc"), str(root / "sys"), str(root / "boot")), commands


@pytest.fixture(scope="module")
def our_cert(tmp_path_factory):
    from tests.lib.keys import make_key
    return make_key(tmp_path_factory.mktemp("k"), "p256", cn="skm unit fleet").cert


# ---------------------------------------------------------------- the development machine (no modules, no EFI)

def test_firecracker_capture(our_cert):
    _root, prefixes, commands = captured("firecracker-6.18")
    ev = rt.collect([str(our_cert)], prefixes, replay(commands))
    rings = ev["keyrings"]["keyrings"]
    assert ev["keyrings"]["source"] == "keyctl" and ev["keyrings"]["unparsed"] == []
    assert rings[".builtin_trusted_keys"] == {"state": "known", "value": []}
    assert rings[".secondary_trusted_keys"]["state"] == "absent"
    assert ev["module_trusting_keyrings"] == [".builtin_trusted_keys"]
    assert ev["certificates"][0]["trusted_for_modules"] is False
    assert ev["efi"]["secure_boot"]["state"] == "absent" and "EFI" in ev["efi"]["secure_boot"]["reason"]
    assert ev["lockdown"]["state"] == "unknown" and ev["sig_enforce"]["state"] == "unknown"
    assert ev["taint"] == {"state": "known", "value": [], "mask": 0}
    assert ev["modules"]["state"] == "unknown" and "/proc/modules" in ev["modules"]["reason"]
    assert ev["rejections"] == {"state": "known", "value": [], "source": "dmesg"}
    assert ev["verdict"]["state"] == "attention"


def test_firecracker_proc_keys_parse_whole():
    keys, unparsed = rt.parse_proc_keys((CAPTURED / "firecracker-6.18/proc/keys").read_text())
    assert unparsed == [] and len(keys) == 6
    builtin = [k for k in keys if k.description == ".builtin_trusted_keys"]
    assert builtin and builtin[0].type == "keyring" and builtin[0].summary == "empty"


def test_without_keyctl_the_keyrings_are_counted_not_trusted(our_cert):
    _root, prefixes, commands = captured("firecracker-6.18")
    ev = rt.collect([str(our_cert)], prefixes, replay({"dmesg": commands["dmesg"]}))
    assert ev["keyrings"]["source"] == "/proc/keys"
    assert ev["keyrings"]["keyrings"][".builtin_trusted_keys"]["count"] == 0
    assert ev["keyrings"]["keyrings"][".machine"]["state"] == "absent"
    assert ev["certificates"][0]["trusted_for_modules"] is None
    assert ev["verdict"]["state"] == "unknown"


# ---------------------------------------------------------------- Debian's kernel under qemu

DEBIAN = CAPTURED / "debian-qemu"
needs_debian = pytest.mark.skipif(not (DEBIAN / "expected.json").exists(), reason="no debian-qemu capture yet")


@needs_debian
def test_debian_capture_gives_the_answer_the_guest_gave():
    root, prefixes, commands = captured("debian-qemu")
    expected = json.loads((root / "expected.json").read_text())
    cert = root / "ours.crt"
    ev = rt.collect([str(cert)], prefixes, replay(commands))
    got = json.loads(json.dumps(ev).replace(str(cert), "/root/ours.crt"))   # where it was in the guest
    for key in ("module_trusting_keyrings", "taint", "modules", "rejections", "efi", "lockdown", "sig_enforce",
                "verdict"):
        assert got[key] == expected[key], key
    assert got["certificates"] == expected["certificates"]


@needs_debian
def test_debian_keyrings_from_keyctl_and_proc_keys_agree():
    root, prefixes, commands = captured("debian-qemu")
    ev = rt.collect([], prefixes, replay(commands))
    keys, unparsed = rt.parse_proc_keys((root / "proc/keys").read_text())
    assert unparsed == []
    counts = dict((k.description, 0 if k.summary == "empty" else int(k.summary)) for k in keys if k.type == "keyring")
    for name, ring in ev["keyrings"]["keyrings"].items():
        if ring["state"] == "known":
            assert len(ring["value"]) == counts[name], name
    builtin = ev["keyrings"]["keyrings"][".builtin_trusted_keys"]["value"]
    shown = commands["keyctl show %:.builtin_trusted_keys"][1]
    assert [e for e in builtin if e["type"] == "asymmetric"]
    for entry in builtin:
        assert entry["description"] in shown


# ---------------------------------------------------------------- bad input: unparsed or unknown, never trusted

def test_a_proc_keys_line_that_does_not_parse_is_reported():
    text = (CAPTURED / "firecracker-6.18/proc/keys").read_text()
    bad = "zzzz I------ 1 perm 1f0b0000 0 0 keyring .builtin_trusted_keys: 1"
    asym = "1b2c3d4e I------     1 perm 1f010000     0     0 asymmetri Evil CA: notakeyid"
    keys, unparsed = rt.parse_proc_keys(text + bad + "\n" + asym + "\n")
    assert unparsed == [bad, asym] and len(keys) == 6


def test_an_asymmetric_description_without_a_key_id_is_unparsed():
    entry = rt.describe_key("asymmetric", "Debian Secure Boot CA")
    assert entry["state"] == "unparsed" and entry["key_id"] is None


def test_an_unparsed_keyring_entry_never_makes_our_certificate_trusted(tmp_path, our_cert):
    (cert,) = rt.load_certificates([str(our_cert)])
    commands = {"keyctl rlist %:.builtin_trusted_keys": [0, "11\n", ""],
                "keyctl rdescribe 11": [0, "garbage without fields", ""]}
    for ring in rt.KEYRINGS[1:]:
        commands["keyctl rlist %:" + ring] = [1, "", "Can't find 'keyring:%s'\n" % ring]
    ev = rt.collect([str(our_cert)], rt.Prefixes(str(tmp_path), str(tmp_path), str(tmp_path)), replay(commands))
    assert ev["keyrings"]["keyrings"][".builtin_trusted_keys"]["value"][0]["state"] == "unparsed"
    assert ev["certificates"][0]["trusted_for_modules"] is False
    assert cert.description not in json.dumps(ev["keyrings"])


def test_our_certificate_is_found_by_the_kernels_description(tmp_path, our_cert):
    (cert,) = rt.load_certificates([str(our_cert)])
    assert cert.subject == "skm.modsign tests: skm unit fleet"   # O: CN, as x509_fabricate_name makes it
    commands = {"keyctl rlist %:.secondary_trusted_keys": [0, "1 2 3\n", ""],
                "keyctl rdescribe 1": [0, "keyring;0;0;1f0b0000;.builtin_trusted_keys", ""],
                "keyctl rdescribe 2": [0, "keyring;0;0;1f0f0000;.machine", ""],
                "keyctl rdescribe 3": [0, "asymmetric;0;0;39010000;%s" % cert.description, ""],
                "keyctl rlist %:.builtin_trusted_keys": [0, "\n", ""],
                "keyctl rlist %:.machine": [0, "\n", ""],
                "keyctl rlist %:.platform": [0, "4\n", ""],
                "keyctl rdescribe 4": [0, "asymmetric;0;0;39010000;Firmware db: 00aa", ""],
                "keyctl rlist %:.blacklist": [0, "\n", ""]}
    ev = rt.collect([str(our_cert)], rt.Prefixes(str(tmp_path), str(tmp_path), str(tmp_path)), replay(commands))
    assert ev["module_trusting_keyrings"] == [".secondary_trusted_keys", ".machine", ".builtin_trusted_keys"]
    assert ev["certificates"][0]["keyrings"] == [".secondary_trusted_keys"]
    assert ev["certificates"][0]["trusted_for_modules"] is True


def test_a_key_only_in_platform_is_not_trusted_for_modules(tmp_path, our_cert):
    (cert,) = rt.load_certificates([str(our_cert)])
    commands = {"keyctl rlist %:.builtin_trusted_keys": [0, "\n", ""],
                "keyctl rlist %:.secondary_trusted_keys": [0, "1\n", ""],
                "keyctl rdescribe 1": [0, "keyring;0;0;1f0b0000;.builtin_trusted_keys", ""],
                "keyctl rlist %:.platform": [0, "5\n", ""],
                "keyctl rdescribe 5": [0, "asymmetric;0;0;39010000;%s" % cert.description, ""]}
    ev = rt.collect([str(our_cert)], rt.Prefixes(str(tmp_path), str(tmp_path), str(tmp_path)), replay(commands))
    assert ev["certificates"][0]["keyrings"] == [".platform"]
    assert ev["certificates"][0]["trusted_for_modules"] is False


@pytest.mark.parametrize("data", [b"\x06\x00\x00\x00", b"\x06\x00\x00\x00\x02", b"\x06\x00\x00\x00\x01\x00", b""])
def test_an_efivar_that_does_not_parse_is_unparsed(tmp_path, data):
    varsdir = tmp_path / "firmware/efi/efivars"
    varsdir.mkdir(parents=True)
    (varsdir / ("SecureBoot-" + rt.EFI_GLOBAL)).write_bytes(data)
    efi = rt.read_efi(rt.Prefixes(str(tmp_path), str(tmp_path), str(tmp_path)))
    assert efi["secure_boot"]["state"] == "unparsed" and efi["secure_boot"]["value"] is None
    assert efi["mok_sb_state"]["state"] == "absent"


def test_efivars_not_mounted_is_unknown(tmp_path):
    (tmp_path / "firmware/efi/efivars").mkdir(parents=True)
    efi = rt.read_efi(rt.Prefixes(str(tmp_path), str(tmp_path), str(tmp_path)))
    assert efi["secure_boot"]["state"] == "unknown" and "not mounted" in efi["secure_boot"]["reason"]


@pytest.mark.parametrize("text,want", [("none [integrity] confidentiality\n", ("known", "integrity")),
                                       ("[none] integrity confidentiality\n", ("known", "none")),
                                       ("integrity\n", ("unparsed", None))])
def test_lockdown(text, want):
    got = rt.parse_lockdown(text)
    assert (got["state"], got["value"]) == want


def test_taint_letters():
    assert rt.taint_letters(12288) == ["O", "E"]
    assert rt.taint_letters(1 << 13) == ["E"]
    assert rt.taint_letters(1 << 30) == ["bit30"]


def test_a_taint_mask_that_is_not_a_number_is_unparsed(tmp_path):
    (tmp_path / "sys/kernel").mkdir(parents=True)
    (tmp_path / "sys/kernel/tainted").write_text("lots\n")
    assert rt.read_taint(rt.Prefixes(str(tmp_path), "", ""))["state"] == "unparsed"


def test_no_dmesg_access_and_no_journal_is_unknown_with_the_reason():
    commands = {"dmesg": [1, "", "dmesg: read kernel buffer failed: Operation not permitted\n"]}
    got = rt.read_rejections(replay(commands))
    assert got["state"] == "unknown" and "Operation not permitted" in got["reason"]
    assert "journalctl: journalctl: not installed" in got["reason"]


def test_rejection_messages_of_several_kernels():
    log = "\n".join([
        "[    5.1] crc16: module verification failed: signature and/or required key missing - tainting kernel",
        "[    6.2] Loading of unsigned module is rejected",
        "[    6.3] Loading of module with unavailable key is rejected",
        "[    6.4] Lockdown: insmod: unsigned module loading is restricted; see man kernel_lockdown.7",
        "[    6.5] Lockdown: Loading of unsigned modules is restricted",
        "[    6.6] PKCS#7 signature not signed with a trusted key",
        "[    6.7] Request for unknown module key 'Fleet: 1234abcd' err -11",
        "[    6.8] usb 1-1: new high-speed USB device",
    ])
    got = rt.parse_rejections(log)
    assert [r["kind"] for r in got] == ["verification_failed", "rejected", "rejected", "lockdown", "lockdown",
                                        "untrusted_pkcs7", "unknown_key"]
    assert got[0]["module"] == "crc16" and got[3]["process"] == "insmod" and got[6]["detail"] == "Fleet: 1234abcd"


def test_modules_without_modinfo_have_an_unknown_signature(tmp_path):
    (tmp_path / "modules").write_text("crc16 12288 0 - Live 0xffffffffc0300000 (E)\nweird line\n")
    got = rt.read_modules(rt.Prefixes(str(tmp_path), str(tmp_path), ""), replay({}), [])
    (module,) = got["value"]
    assert module["taint"] == "E" and module["kernel_verified"] is False
    assert module["signature"]["state"] == "unknown" and module["ours"] is None
    assert got["unparsed"] == ["weird line"]


def test_a_certificate_that_is_not_one_names_the_file(tmp_path):
    bad = tmp_path / "bad.crt"
    bad.write_text("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
    with pytest.raises(rt.ModSignError) as err:
        rt.load_certificates([str(bad)])
    assert str(bad) in str(err.value) or err.value.path == str(bad)


def test_the_live_sysctl_taint_mask_reads(tmp_path):
    """Regression: one 16 MiB read() of /proc/sys/kernel/tainted fails with ENOMEM; it is read in chunks."""
    got = rt.read_taint(rt.Prefixes())
    assert got["state"] == "known" and isinstance(got["mask"], int)


# ---------------------------------------------------------------- the gate's use of the evidence

def _evidence(trusted, modules=()):
    return {"certificates": [{"path": "/k/ours.crt", "description": "Fleet: ab12", "trusted_for_modules": trusted,
                              "reason": "in .machine" if trusted else "in no keyring"}],
            "modules": {"state": "known", "value": [dict(name=n, kernel_verified=v) for n, v in modules]}}


def test_gate_refuses_a_loaded_module_the_kernel_did_not_verify():
    problems, disagreements = rt.gate_findings(_evidence(True, [("crc7", True), ("zfs", False)]), [])
    assert problems == ["the running kernel has modules loaded that it did not verify (taint E: unsigned, or signed "
                        "by a key in no trusted keyring): zfs"]
    assert disagreements == []


def test_gate_refuses_our_certificate_in_no_trusting_keyring_and_names_both_sides():
    problems, disagreements = rt.gate_findings(_evidence(False), [])
    assert "certificate /k/ours.crt (Fleet: ab12) is in no keyring the running kernel trusts" in problems[0]
    assert disagreements == ["certificate /k/ours.crt: the files predict trusted for modules, the running kernel's "
                             "keyrings say not trusted for modules (in no keyring)"]


def test_gate_reports_evidence_that_trusts_what_the_files_do_not():
    problems, disagreements = rt.gate_findings(_evidence(True), ["/k/ours.crt"])
    assert problems == [] and "the files predict not trusted for modules" in disagreements[0]


def test_gate_unknown_evidence_refuses_and_contradicts_nothing():
    assert rt.gate_findings(_evidence(None), []) == ([], [])


def _debian_gate(cert_paths, kernel, problems=(), root_dir="/"):
    root, prefixes, commands = captured("debian-qemu")
    return rt.gate_evidence(cert_paths, kernel, root_dir, list(problems), replay(commands), prefixes)


@needs_debian
def test_gate_evidence_of_the_debian_guest_refuses_and_disagrees_with_a_trusting_prediction():
    cert = str(DEBIAN / "ours.crt")
    got = _debian_gate([cert], "6.1.0-57-amd64")
    assert got["applied"] is True and got["running_kernel"] == "6.1.0-57-amd64"
    assert any("taint E" in p and "crc16, crc_itu_t" in p for p in got["problems"])
    assert any(p.startswith("certificate %s" % cert) for p in got["problems"])
    assert got["disagreements"] == ["certificate %s: the files predict trusted for modules, the running kernel's "
                                    "keyrings say not trusted for modules (in no keyring; modules are checked "
                                    "against .secondary_trusted_keys, .machine, .builtin_trusted_keys)" % cert]


@needs_debian
def test_gate_evidence_agrees_with_a_prediction_that_already_distrusts():
    cert = str(DEBIAN / "ours.crt")
    problem = "not in a keyring kernel 6.1.0-57-amd64 trusts for modules (built-in, ...): %s" % cert
    assert _debian_gate([cert], "6.1.0-57-amd64", [problem])["disagreements"] == []


@needs_debian
def test_gate_evidence_counts_only_for_the_running_kernel_on_the_live_root():
    other = _debian_gate([], "6.12.0-1-amd64")
    assert other["applied"] is False and "the running kernel is 6.1.0-57-amd64" in other["reason"]
    tree = _debian_gate([], "6.1.0-57-amd64", root_dir="/srv/image")
    assert tree["applied"] is False and "not the running system" in tree["reason"] and tree["problems"] == []


# ---------------------------------------------------------------- our e2e kernel (our certificates built in)

E2E = CAPTURED / "e2e-6.1-ours"


def test_e2e_kernel_trusts_our_certificates_by_the_kernels_own_description():
    """The e2e kernel (tests/runtime/e2e_capture.py): RSA-3072 (CONFIG_MODULE_SIG_KEY) and P-384
    (CONFIG_SYSTEM_TRUSTED_KEYS) built in, CONFIG_MODULE_SIG_FORCE=y, no secondary keyring; skm_e2e signed
    with the RSA key loaded (taint O only), the unsigned copy was rejected."""
    root, prefixes, commands = captured("e2e-6.1-ours")
    certs = [str(root / "ours-rsa.crt"), str(root / "ours-p384.crt")]
    ev = rt.collect(certs, prefixes, replay(commands))
    assert ev["module_trusting_keyrings"] == [".builtin_trusted_keys"]
    assert [(c["keyrings"], c["trusted_for_modules"]) for c in ev["certificates"]] == \
        [([".builtin_trusted_keys"], True)] * 2
    shown = (root / "proc/keys").read_text()
    for cert in ev["certificates"]:
        assert cert["description"] in shown          # what /proc/keys printed is what we computed
    (module,) = ev["modules"]["value"]
    assert module["name"] == "skm_e2e" and module["taint"] == "O" and module["kernel_verified"] is True
    assert module["ours"] is True and module["signer"] == "skm.modsign e2e RSA-3072"
    assert ev["taint"] == {"state": "known", "value": ["O"], "mask": 4096}
    assert ev["sig_enforce"]["value"] is True and ev["config_module_sig_force"]["value"] is True
    assert [r["detail"] for r in ev["rejections"]["value"]] == ["unsigned module", "unsigned module"]
    assert ev["efi"]["secure_boot"]["state"] == "absent" and ev["lockdown"]["state"] == "unknown"
    assert ev["verdict"]["attention"] == ["2 module signature message(s) in the kernel log since boot"]
    problems, disagreements = rt.gate_findings(ev, [])
    assert problems == [] and disagreements == []
