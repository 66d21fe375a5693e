"""_mok: parsing real mokutil output, planning, the hash file. No EFI needed.

The mokutil output comes from the real binary (Debian's mokutil) run in the OVMF VM and recorded by
tests/vm/capture_mokutil.py (``make mok-capture``) into tests/vm/captured/. The Mokutil class is
driven by a runner that replays those recordings: a replay of real output, not invented text.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import stat
import subprocess

import pytest

from ansible_collections.skm.modsign.plugins.module_utils import _mok as mok
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

CAPTURED = sorted((pathlib.Path(__file__).resolve().parents[1] / "vm" / "captured").glob("mokutil-*.json"))


@pytest.fixture(scope="module", params=CAPTURED, ids=[p.stem for p in CAPTURED])
def capture(request):
    data = json.loads(request.param.read_text())
    data["by_note"] = {r["note"]: r for r in data["records"]}
    data["der"] = base64.b64decode(data["certificate_der_b64"])
    return data


def out(capture, note):
    record = capture["by_note"][note]
    return record["stdout"], record["stderr"]


def test_captures_exist():
    assert CAPTURED, "run make mok-capture"


def test_sb_state_setup_mode(capture):
    sb = mok.parse_sb_state(*out(capture, "sb-state, OVMF in setup mode"))
    assert sb == mok.SecureBoot("disabled", True, False)


def test_sb_state_on_this_host_without_efi():
    proc = subprocess.run(["mokutil", "--sb-state"], capture_output=True, text=True, check=False)
    if os.path.isdir("/sys/firmware/efi/efivars"):
        pytest.skip("this host has EFI variables")
    assert mok.parse_sb_state(proc.stdout, proc.stderr).state == "unsupported"
    assert mok.is_unsupported(proc.stdout + proc.stderr)


@pytest.mark.parametrize("note, verdict", [
    ("test-key, fresh", mok.ABSENT),
    ("test-key, pending", mok.PENDING),
])
def test_test_key_by_words_not_exit_code(capture, note, verdict):
    assert mok.parse_test_key(*out(capture, note), path="/root/cert.der") == verdict
    # the exit codes that mean "not enrolled" / "pending" differ between releases; we never read them
    assert capture["by_note"][note]["rc"] in (0, 1)


def test_test_key_pem_is_an_error(capture):
    with pytest.raises(ModSignError, match="not a valid x509"):
        mok.parse_test_key(*out(capture, "test-key, PEM file"), path="/root/cert.pem")


def test_fingerprints_match_openssl(capture, tmp_path):
    (tmp_path / "c.der").write_bytes(capture["der"])
    fp = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(tmp_path / "c.der"), "-noout",
                         "-fingerprint", "-sha1"], capture_output=True, text=True, check=True).stdout
    expected = fp.strip().split("=", 1)[1].lower()
    assert mok.sha1_fingerprint(capture["der"]) == expected
    assert mok.parse_fingerprints(out(capture, "list-new, pending")[0]) == [expected]
    assert mok.parse_fingerprints(out(capture, "list-new, empty")[0]) == []


def test_generate_hash_line(capture):
    line = mok.parse_generate_hash(out(capture, "generate-hash from stdin")[0])
    assert line.startswith("$6$") and "input password" not in line


@pytest.mark.parametrize("note, outcome", [
    ("import, first", "requested"),
    ("import, again", "skipped"),          # exit code 0 although nothing was imported
    ("delete, cancels pending import", "cancelled"),
])
def test_request_outcomes(capture, note, outcome):
    assert capture["by_note"][note]["rc"] == 0
    assert mok.parse_request(*out(capture, note), path="/root/cert.der") == outcome


@pytest.mark.parametrize("note, words", [
    ("import with a PEM file", "not a valid x509"),
    ("import, broken hash file", "corrupted string"),
])
def test_request_failures(capture, note, words):
    with pytest.raises(ModSignError, match=words):
        mok.parse_request(*out(capture, note), path="/root/cert.der")


class Replay:
    """A runner that answers with recorded real mokutil output, and records what it was asked."""

    def __init__(self, capture, answers):
        self.capture = capture
        self.answers = answers        # argv[1] -> note
        self.calls = []

    def __call__(self, argv, data=None):
        self.calls.append((argv, data))
        record = self.capture["by_note"][self.answers[argv[1]]]
        return record["rc"], record["stdout"], record["stderr"]


def test_query_and_plan_from_recorded_output(capture, tmp_path):
    runner = Replay(capture, {"--sb-state": "sb-state, OVMF in setup mode", "--test-key": "test-key, pending",
                              "--list-delete": "list-new, empty"})
    status = mok.query(mok.Mokutil(runner), "/root/cert.der", capture["der"], efivars_dir=str(tmp_path),
                       mokvar_dir=str(tmp_path))
    assert status.state == mok.PENDING and status.secure_boot == "disabled" and status.timeout == 10
    assert mok.plan(status, "present") == []
    assert mok.plan(status, "absent") == [mok.Action("delete")]
    assert mok.plan(status, "present", timeout=-1) == [mok.Action("timeout", -1)]
    assert mok.reboot_required(status)
    steps = mok.console_steps(status)
    assert "Enroll MOK" in steps[1] and status.fingerprint in steps[2]


def test_password_goes_through_stdin_only(capture):
    runner = Replay(capture, {"--generate-hash": "generate-hash from stdin"})
    line = mok.Mokutil(runner).password_hash("s3cret-pw")
    argv, data = runner.calls[0]
    assert argv == ["mokutil", "--generate-hash"] and data == b"s3cret-pw\ns3cret-pw\n"
    assert line.startswith("$6$")


def test_hash_file_is_0600_and_removed(tmp_path):
    with mok.hash_file("$6$salt$hash", str(tmp_path)) as name:
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600
        assert pathlib.Path(name).read_bytes() == b"$6$salt$hash"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        with mok.hash_file("$6$salt$hash", str(tmp_path)):
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("password, words", [("", "1 to 256"), ("a\nb", "newline"), ("x" * 257, "1 to 256")])
def test_password_limits_without_showing_it(password, words):
    with pytest.raises(ModSignError, match=words) as info:
        mok.check_password(password)
    if password:
        assert password not in str(info.value)


def test_trust_password_limits():
    with pytest.raises(ModSignError, match="8 to 16"):
        mok.check_password("short", 8, 16, "trust_mok")


def test_read_certificate_refuses_pem_keys_and_garbage(tmp_path, session_keys):
    keys = session_keys("p256")
    assert mok.read_certificate(str(keys.cert_der)) == keys.cert_der.read_bytes()
    with pytest.raises(ModSignError, match="is PEM; mokutil needs the DER form") as info:
        mok.read_certificate(str(keys.cert))
    assert str(keys.cert) in str(info.value)
    with pytest.raises(ModSignError, match="private key, not a certificate") as info:
        mok.read_certificate(str(keys.key))
    assert "PRIVATE" not in str(info.value).replace("private key", "")
    (tmp_path / "junk.der").write_bytes(b"\x30\x03\x02\x01")
    with pytest.raises(ModSignError, match="not a valid X.509"):
        mok.read_certificate(str(tmp_path / "junk.der"))
    with pytest.raises(ModSignError, match="cannot read"):
        mok.read_certificate(str(tmp_path / "missing.der"))


def test_efivar_readers(tmp_path):
    (tmp_path / f"MokTimeout-{mok.SHIM_GUID}").write_bytes(b"\x07\x00\x00\x00" + (-1).to_bytes(4, "little", signed=True))
    assert mok.read_timeout(str(tmp_path)) == -1
    assert mok.read_trust(str(tmp_path), str(tmp_path)) == (False, False)
    (tmp_path / f"MokListTrustedNew-{mok.SHIM_GUID}").write_bytes(b"\x07\x00\x00\x00\x00")
    assert mok.read_trust(str(tmp_path), str(tmp_path)) == (False, True)


@pytest.mark.parametrize("listing, fails", [("list-new, empty", True), ("list-new, pending", False)])
def test_import_is_read_back_from_list_new(capture, tmp_path, listing, fails):
    """Issue 16 2.9: ``--import`` exits 0 whether or not anything was staged; --list-new decides."""
    cert = tmp_path / "cert.der"
    cert.write_bytes(capture["der"])
    runner = Replay(capture, {"--generate-hash": "generate-hash from stdin", "--import": "import, first",
                              "--list-new": listing})
    if fails:
        with pytest.raises(mok.MokRequestError, match="not staged") as caught:
            mok.apply(mok.Mokutil(runner), str(cert), [mok.Action("import")], "s3cret-pw", temp_dir=str(tmp_path))
        assert caught.value.done == ["import: requested"] and str(cert) in str(caught.value)
    else:
        assert mok.apply(mok.Mokutil(runner), str(cert), [mok.Action("import")], "s3cret-pw",
                         temp_dir=str(tmp_path)) == ["import: requested"]
    assert [argv[1] for argv, _result in runner.calls] == ["--generate-hash", "--import", "--list-new"]


def test_check_enrollable_refuses_ed25519_and_dates(tmp_path):
    import datetime as dt
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.x509.oid import NameOID
    now = dt.datetime.now(dt.timezone.utc)

    def der(key, start, end):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(1).not_valid_before(start).not_valid_after(end)
                .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.DER)

    day = dt.timedelta(days=1)
    p256 = ec.generate_private_key(ec.SECP256R1())
    mok.check_enrollable(der(p256, now - day, now + day), "ok.der")
    with pytest.raises(ModSignError, match="Ed25519"):
        mok.check_enrollable(der(ed25519.Ed25519PrivateKey.generate(), now - day, now + day), "e.der")
    with pytest.raises(ModSignError, match="expired on"):
        mok.check_enrollable(der(p256, now - 2 * day, now - day), "x.der")
    with pytest.raises(ModSignError, match="not valid before"):
        mok.check_enrollable(der(p256, now + day, now + 2 * day), "y.der")
    # GeneralizedTime (after 2049) is read as well as UTCTime
    mok.check_enrollable(der(p256, now - day, dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)), "long.der")
