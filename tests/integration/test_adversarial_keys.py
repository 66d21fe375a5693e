"""Issue 16, keys: what a careless operator and bad input did to skm_genkey, skm_mok_enroll and skm_certificates.

Every test here failed before its fix (2.3, 2.8 key part, 2.9, 13). All run the real module through
ansible-playbook. Oracles we did not write: openssl (which key a certificate belongs to), the real mokutil
(what is staged in MokNew), the kernel's tmpfs (a full disk).

mokutil runs for real over a scratch EFI variable directory: libefivar reads and writes the directory named
by EFIVARFS_PATH (set explicitly, it skips its efivarfs magic check), so ``mokutil --import`` really writes
MokNew and ``--list-new`` really reads it back. A firmware that accepts a write and keeps nothing is
imitated by making MokNew a link to /dev/null: mokutil exits 0 and stages nothing.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from tests.lib.ansible_run import run_module
from tests.lib.keys import make_key

FILES = ["signing_key.crt", "signing_key.der", "signing_key.key", "signing_key.pem", "skm-key.json"]
MOK_PASSWORD = "adv-mok-pw-5531"
SHIM = "605dab50-e046-4300-abb6-3dd810dd8b23"
GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"


def snapshot(directory: pathlib.Path) -> dict:
    return {p.relative_to(directory).as_posix(): (os.readlink(p) if p.is_symlink()
                                                  else p.read_bytes() if p.is_file() else None)
            for p in sorted(directory.rglob("*"))}


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], check=True, capture_output=True, text=True).stdout


def public_key_of_key(path: pathlib.Path) -> str:
    return openssl("pkey", "-in", str(path), "-pubout")


def public_key_of_cert(path: pathlib.Path) -> str:
    return openssl("x509", "-in", str(path), "-noout", "-pubkey")


def no_secret(result: dict, *key_files: pathlib.Path) -> None:
    text = result["_stdout"] + result["_stderr"]
    assert "PRIVATE KEY" not in text
    for key_file in key_files:
        for line in key_file.read_text().splitlines()[1:-1]:
            assert line not in text


# ---------------------------------------------------------------------------------------------
# 2.3 - a readable key is never replaced because its metadata is missing

@pytest.fixture
def flat_key(tmp_path):
    directory = tmp_path / "keys"
    made = run_module("skm_genkey", {"path": str(directory), "key_type": "ecdsa", "key_size": 256, "hash": "sha256"})
    assert made["changed"] and not made.get("failed")
    return directory, made


@pytest.mark.parametrize("damage", ["missing", "empty", "corrupt", "not-an-object"])
def test_metadata_lost_key_kept_and_metadata_rebuilt(flat_key, damage):
    directory, made = flat_key
    meta = directory / "skm-key.json"
    key_bytes = (directory / "signing_key.key").read_bytes()
    {"missing": meta.unlink, "empty": lambda: meta.write_text(""),
     "corrupt": lambda: meta.write_text('{"created": "2026-'),
     "not-an-object": lambda: meta.write_text("[1, 2]")}[damage]()
    args = {"path": str(directory), "key_type": "ecdsa", "key_size": 256, "hash": "sha256"}

    would = run_module("skm_genkey", args, check=True, diff=True)
    assert would["changed"] and not would["generated"], would.get("msg")
    assert "skm-key.json" in would["reason"]
    assert (directory / "signing_key.key").read_bytes() == key_bytes

    repaired = run_module("skm_genkey", args)
    assert not repaired.get("failed"), repaired.get("msg")
    assert repaired["changed"] and not repaired["generated"]
    assert repaired["fingerprint"] == made["fingerprint"]
    assert (directory / "signing_key.key").read_bytes() == key_bytes
    rebuilt = json.loads(meta.read_text())
    assert rebuilt["fingerprint"] == made["fingerprint"] and rebuilt["hash"] == "sha256"
    assert rebuilt["created"] <= made["created"]     # the certificate's notBefore: the clock never restarts
    assert not run_module("skm_genkey", args)["changed"]


def test_certificate_lost_new_certificate_for_the_same_key(flat_key):
    directory, made = flat_key
    key_bytes = (directory / "signing_key.key").read_bytes()
    for name in ("signing_key.crt", "signing_key.der", "signing_key.pem", "skm-key.json"):
        (directory / name).unlink()
    args = {"path": str(directory), "key_type": "ecdsa", "key_size": 256, "hash": "sha256"}
    repaired = run_module("skm_genkey", args)
    assert not repaired.get("failed"), repaired.get("msg")
    assert repaired["changed"] and not repaired["generated"]
    assert (directory / "signing_key.key").read_bytes() == key_bytes
    assert sorted(p.name for p in directory.iterdir()) == FILES
    # openssl: the new certificate and the combined PEM belong to the key that was there
    assert public_key_of_cert(directory / "signing_key.crt") == public_key_of_key(directory / "signing_key.key")
    assert public_key_of_key(directory / "signing_key.pem") == public_key_of_key(directory / "signing_key.key")
    assert openssl("x509", "-inform", "DER", "-in", str(directory / "signing_key.der")) == \
        openssl("x509", "-in", str(directory / "signing_key.crt"))
    assert not run_module("skm_genkey", args)["changed"]


def test_only_combined_pem_left_key_kept(flat_key):
    directory, made = flat_key
    for name in ("signing_key.key", "signing_key.crt", "signing_key.der", "skm-key.json"):
        (directory / name).unlink()
    combined = (directory / "signing_key.pem").read_bytes()
    repaired = run_module("skm_genkey", {"path": str(directory), "key_type": "ecdsa", "key_size": 256,
                                         "hash": "sha256"})
    assert not repaired.get("failed"), repaired.get("msg")
    assert repaired["fingerprint"] == made["fingerprint"] and not repaired["generated"]
    assert (directory / "signing_key.pem").read_bytes() == combined
    assert public_key_of_key(directory / "signing_key.key") == public_key_of_key(directory / "signing_key.pem")


def test_certificate_of_another_key_fails_clearly_and_touches_nothing(flat_key, tmp_path):
    directory, _made = flat_key
    other = make_key(tmp_path / "other", "p256")
    shutil.copy(other.cert, directory / "signing_key.crt")
    (directory / "skm-key.json").unlink()
    before = snapshot(directory)
    result = run_module("skm_genkey", {"path": str(directory), "key_type": "ecdsa", "key_size": 256,
                                       "hash": "sha256"})
    assert result["failed"] and "does not match" in result["msg"] and "signing_key.crt" in result["msg"]
    assert "regenerate=always" in result["msg"]
    assert snapshot(directory) == before
    no_secret(result, directory / "signing_key.key")


def test_flat_rotation_keeps_the_previous_generation(flat_key):
    directory, made = flat_key
    old = {name: (directory / name).read_bytes() for name in FILES}
    rotated = run_module("skm_genkey", {"path": str(directory), "key_type": "ecdsa", "key_size": 256,
                                        "hash": "sha256", "regenerate": "always"})
    assert rotated["changed"] and rotated["generated"] and rotated["fingerprint"] != made["fingerprint"]
    kept = pathlib.Path(rotated["previous_generation"])
    assert kept.parent == directory / "previous"
    assert {name: (kept / name).read_bytes() for name in FILES} == old
    assert oct((kept / "signing_key.key").stat().st_mode & 0o777) == "0o600"
    # the new set is whole and consistent
    assert public_key_of_cert(directory / "signing_key.crt") == public_key_of_key(directory / "signing_key.key")


# ---------------------------------------------------------------------------------------------
# 2.8 - partial multi-file writes

@pytest.mark.parametrize("which", ["owner", "group"])
def test_unknown_owner_writes_nothing(tmp_path, which):
    directory = tmp_path / "keys"
    result = run_module("skm_genkey", {"path": str(directory), "key_size": 2048, which: "nosuchuser"})
    assert result["failed"] and result["changed"] is False
    assert "nosuchuser" in result["msg"]
    assert not directory.exists()


def test_unknown_owner_on_a_kept_key_changes_nothing(flat_key):
    directory, _made = flat_key
    before = snapshot(directory)
    result = run_module("skm_genkey", {"path": str(directory), "key_type": "ecdsa", "key_size": 256,
                                       "hash": "sha256", "owner": "nosuchuser"})
    assert result["failed"] and "nosuchuser" in result["msg"]
    assert snapshot(directory) == before


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=False,
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def fill_leaving_one_page(mnt: pathlib.Path) -> None:
    """Fill the tmpfs, then free one page: room for one small file at a time, not for a whole key set."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096) == 4096:
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    size = filler.stat().st_size
    os.truncate(filler, size - size % 4096 - 4096)


@pytest.mark.parametrize("layout", ["flat", "dated"])
def test_rotation_on_a_full_disk_leaves_the_old_set_whole(small_fs, layout):
    base = small_fs / "keys"
    args = {"path": str(base), "layout": layout, "key_size": 4096}
    first = run_module("skm_genkey", args)
    assert first["changed"] and not first.get("failed"), first.get("msg")
    active = pathlib.Path(first["directory"])
    fill_leaving_one_page(small_fs)
    before = snapshot(base)

    rotated = run_module("skm_genkey", dict(args, regenerate="always"))
    assert rotated["failed"]
    assert "No space left" in rotated["msg"] or "no space" in rotated["msg"].lower()
    # nothing was committed, and the result says so file by file
    assert rotated["changed"] is False
    assert rotated["written"] == []
    assert sorted(os.path.basename(p) for p in rotated["not_written"]) == sorted(FILES)
    assert snapshot(base) == before
    assert public_key_of_cert(active / "signing_key.crt") == public_key_of_key(active / "signing_key.key")
    assert public_key_of_key(active / "signing_key.pem") == public_key_of_key(active / "signing_key.key")
    if layout == "dated":
        assert os.readlink(base / "current") == active.name
    no_secret(rotated, active / "signing_key.key")

    (small_fs / "filler").unlink()
    again = run_module("skm_genkey", dict(args, regenerate="always"))
    assert again["changed"] and not again.get("failed"), again.get("msg")


# ---------------------------------------------------------------------------------------------
# 2.9 - skm_mok_enroll checks what mokutil staged

@pytest.fixture
def efivars(tmp_path):
    """A scratch EFI variable store: Secure Boot on, user mode, no MOK variables yet."""
    if not shutil.which("mokutil"):
        pytest.fail("Debian package mokutil must be installed for this test")
    store = tmp_path / "efivars"
    store.mkdir()
    (store / f"SecureBoot-{GLOBAL}").write_bytes(b"\x06\x00\x00\x00\x01")
    (store / f"SetupMode-{GLOBAL}").write_bytes(b"\x06\x00\x00\x00\x00")
    return store


def mok_env(store: pathlib.Path) -> dict:
    return {"EFIVARFS_PATH": str(store) + "/"}


def list_new(store: pathlib.Path) -> str:
    return subprocess.run(["mokutil", "--list-new"], capture_output=True, text=True, check=False,
                          env=dict(os.environ, **mok_env(store))).stdout


def sha1(der: pathlib.Path) -> str:
    return openssl("x509", "-inform", "DER", "-in", str(der), "-noout", "-fingerprint",
                   "-sha1").strip().split("=", 1)[1].lower()


def test_mok_import_is_read_back(efivars, session_keys):
    cert = session_keys("p256")
    result = run_module("skm_mok_enroll", {"certificate": str(cert.cert_der), "password": MOK_PASSWORD},
                        env=mok_env(efivars))
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] and result["state"] == "pending"
    assert sha1(cert.cert_der) in list_new(efivars).lower()        # real mokutil's own listing
    assert MOK_PASSWORD not in result["_stdout"] + result["_stderr"]


def test_mok_import_that_stages_nothing_fails(efivars, session_keys):
    cert = session_keys("p256")
    (efivars / f"MokNew-{SHIM}").symlink_to("/dev/null")         # the write is accepted and lost
    result = run_module("skm_mok_enroll", {"certificate": str(cert.cert_der), "password": MOK_PASSWORD},
                        env=mok_env(efivars))
    assert result["failed"], result
    assert "not staged" in result["msg"] and "--list-new" in result["msg"]
    assert str(cert.cert_der) in result["msg"]
    assert MOK_PASSWORD not in result["_stdout"] + result["_stderr"]


def make_cert(directory: pathlib.Path, name: str, key, not_before, not_after) -> pathlib.Path:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    cert = builder.sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    path = directory / f"{name}.der"
    path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return path


NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


@pytest.mark.parametrize("case, words", [
    ("ed25519", "Ed25519"),
    ("p521", "secp521r1 is not accepted by the kernel"),
    ("expired", "expired on"),
    ("not-yet-valid", "not valid before"),
])
def test_mok_refuses_unusable_certificates_before_mokutil(efivars, tmp_path, case, words):
    key = (ed25519.Ed25519PrivateKey.generate() if case == "ed25519"
           else ec.generate_private_key(ec.SECP521R1() if case == "p521" else ec.SECP256R1()))
    start, end = {"ed25519": (NOW - DAY, NOW + 30 * DAY), "p521": (NOW - DAY, NOW + 30 * DAY), "expired": (NOW - 30 * DAY, NOW - DAY),
                  "not-yet-valid": (NOW + DAY, NOW + 30 * DAY)}[case]
    der = make_cert(tmp_path, case, key, start, end)
    result = run_module("skm_mok_enroll", {"certificate": str(der), "password": MOK_PASSWORD},
                        env=mok_env(efivars))
    assert result["failed"] and words in result["msg"] and str(der) in result["msg"], result.get("msg")
    assert sorted(p.name for p in efivars.iterdir()) == [f"SecureBoot-{GLOBAL}", f"SetupMode-{GLOBAL}"]
    # query still reports on such a certificate (a host may hold one already)
    queried = run_module("skm_mok_enroll", {"certificate": str(der), "state": "query"}, env=mok_env(efivars))
    assert not queried.get("failed"), queried.get("msg")


# ---------------------------------------------------------------------------------------------
# 13 - skm_certificates: a private key that does not belong to the certificate

@pytest.mark.parametrize("kind", ["p256", "rsa2048"])
@pytest.mark.parametrize("wrong", ["private_key", "combined"])
def test_certificates_refuses_a_key_of_another_certificate(tmp_path, session_keys, kind, wrong):
    mine = session_keys(kind)
    other = make_key(tmp_path / "other", kind)
    generation = {"name": "20260101-000000", "certificate": mine.cert.read_text(),
                  "private_key": mine.key.read_text(), "combined": mine.combined.read_text()}
    generation[wrong] = (other.key if wrong == "private_key" else other.combined).read_text()
    target = tmp_path / "host"
    result = run_module("skm_certificates", {"path": str(target), "generations": [generation],
                                             "private_keys": "present"})
    assert result["failed"] and "does not match the certificate" in result["msg"], result.get("msg")
    assert "20260101-000000" in result["msg"] and wrong in result["msg"]
    assert not target.exists()
    no_secret(result, mine.key, other.key)


def test_certificates_accepts_the_right_pair(tmp_path, session_keys):
    mine = session_keys("p256")
    generation = {"name": "20260101-000000", "certificate": mine.cert.read_text(),
                  "private_key": mine.key.read_text(), "combined": mine.combined.read_text()}
    result = run_module("skm_certificates", {"path": str(tmp_path / "host"), "generations": [generation],
                                             "private_keys": "present"})
    assert result["changed"] and not result.get("failed"), result.get("msg")


# ---------------------------------------------------------------------------------------------
# 13 - one validity rule: skm_sign refuses a not-yet-valid certificate as it refuses an expired one

@pytest.mark.parametrize("case, words", [("expired", "expired on"), ("not-yet-valid", "not valid before")])
def test_sign_refuses_certificates_outside_their_validity(tmp_path, debian_kernel, debian_sample, case, words):
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = {"expired": (NOW - 30 * DAY, NOW - DAY), "not-yet-valid": (NOW + DAY, NOW + 30 * DAY)}[case]
    der = make_cert(tmp_path, case, key, start, end)
    cert_pem = tmp_path / f"{case}.crt"
    cert_pem.write_text(openssl("x509", "-inform", "DER", "-in", str(der)))
    key_pem = tmp_path / f"{case}.key"
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    module = tmp_path / "m.ko"
    shutil.copy(debian_kernel.modules_dir / debian_sample[0], module)
    before = module.read_bytes()
    result = run_module("skm_sign", {"path": [str(module)], "key": str(key_pem), "cert": str(cert_pem),
                                     "hash": "sha256", "replace_foreign": True})
    assert result["failed"] and words in result["msg"], result.get("msg")
    assert module.read_bytes() == before
