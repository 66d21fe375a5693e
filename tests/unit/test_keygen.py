"""Rotation rules of skm_genkey's core: refresh periods and regenerate semantics."""

from __future__ import annotations

import datetime
import json
import os
import subprocess

import pytest

from ansible_collections.skm.modsign.plugins.module_utils import _keygen as keygen
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

NOW = datetime.datetime(2026, 11, 23, 12, 0, 0, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("text,hours", [("12h", 12), ("7d", 168), ("30days", 720), ("1 day", 24), ("2w", 336),
                                        ("6m", 6 * 720), ("1y", 8760), ("always", 0)])
def test_refresh_periods(text, hours):
    assert keygen.parse_refresh(text) == datetime.timedelta(hours=hours)


def test_refresh_never_and_nonsense():
    assert keygen.parse_refresh("never") is None
    with pytest.raises(ModSignError, match="not understood"):
        keygen.parse_refresh("fortnightly")


def facts(created="2026-11-01T00:00:00Z", **over):
    base = dict(fingerprint="ab", skid="cd", serial="1", subject="CN=x", not_before="", not_after="2126-01-01T00:00:00Z",
                key_type="rsa", key_size=4096, hash_name="sha512", profile="signing", created=created)
    base.update(over)
    return keygen.KeyFacts(**base)


SPEC = keygen.KeySpec("rsa", 4096, "sha512")


def test_decide_keeps_a_matching_key():
    assert keygen.decide(keygen.Existing(facts(), None), SPEC, "partial_idempotence", None, NOW) is None


def test_decide_refresh_from_recorded_creation_time():
    existing = keygen.Existing(facts(created="2026-11-20T12:00:00Z"), None)
    assert keygen.decide(existing, SPEC, "partial_idempotence", datetime.timedelta(days=7), NOW) is None
    assert "refresh" in keygen.decide(existing, SPEC, "partial_idempotence", datetime.timedelta(days=2), NOW)
    assert keygen.decide(existing, SPEC, "never", datetime.timedelta(days=2), NOW) is None


def test_decide_mismatch_per_regenerate_value():
    existing = keygen.Existing(facts(key_size=2048), None)
    assert keygen.decide(existing, SPEC, "never", None, NOW) is None
    with pytest.raises(ModSignError, match="partial_idempotence"):
        keygen.decide(existing, SPEC, "fail", None, NOW)
    assert "key_size is 2048" in keygen.decide(existing, SPEC, "partial_idempotence", None, NOW)
    assert keygen.decide(existing, SPEC, "always", None, NOW) == "regenerate=always"


def test_decide_unreadable_key_only_replaced_under_full_idempotence():
    unreadable = keygen.Existing(None, "wrong passphrase", unreadable=True)
    with pytest.raises(ModSignError, match="full_idempotence"):
        keygen.decide(unreadable, SPEC, "partial_idempotence", None, NOW)
    assert keygen.decide(unreadable, SPEC, "full_idempotence", None, NOW) == "wrong passphrase"
    expired = keygen.Existing(facts(), "the certificate expired on 2020-01-01T00:00:00Z")
    assert "expired" in keygen.decide(expired, SPEC, "partial_idempotence", None, NOW)
    assert keygen.decide(None, SPEC, "never", None, NOW) == "no key yet"


@pytest.mark.parametrize("spec,words", [
    (keygen.KeySpec("dsa", 2048, "sha256"), "rsa or ecdsa"),
    (keygen.KeySpec("rsa", 1024, "sha256"), "not supported"),
    (keygen.KeySpec("ecdsa", 521, "sha512"), "not supported"),
    (keygen.KeySpec("ecdsa", 384, "sha256"), "at least 384"),
    (keygen.KeySpec("rsa", 2048, "md5"), "unsupported hash"),
    (keygen.KeySpec("rsa", 2048, "sha256", {"XX": "y"}), "unknown subject attribute"),
])
def test_spec_refusals(spec, words):
    with pytest.raises(ModSignError, match=words):
        keygen.check_spec(spec)


@pytest.mark.parametrize("key_type,key_size,hash_name,algorithm", [
    ("rsa", 2048, "sha256", "sha256WithRSAEncryption"),
    ("rsa", 3072, "sha512", "sha512WithRSAEncryption"),
    ("ecdsa", 256, "sha256", "ecdsa-with-SHA256"),
    ("ecdsa", 384, "sha384", "ecdsa-with-SHA384"),
    ("ecdsa", 384, "sha512", "ecdsa-with-SHA512"),
])
def test_generation_as_openssl_reads_it(key_type, key_size, hash_name, algorithm, tmp_path):
    spec = keygen.KeySpec(key_type, key_size, hash_name, {"CN": "unit", "O": "skm"}, validity_days=10)
    generation = keygen.make_generation(spec, None, NOW)
    paths = keygen.write_generation(str(tmp_path), generation)
    text = subprocess.run(["openssl", "x509", "-in", paths["certificate"], "-noout", "-text"], check=True,
                          capture_output=True, text=True).stdout
    assert f"Signature Algorithm: {algorithm}" in text and f"({key_size} bit)" in text
    assert "Not After : Dec  3 12:00:00 2026 GMT" in text          # NOW + 10 days
    assert "CN = unit" in text and "O = skm" in text
    assert oct(os.stat(paths["private_key"]).st_mode & 0o777) == "0o600"
    assert oct(os.stat(paths["certificate"]).st_mode & 0o777) == "0o644"
    meta = json.loads(generation.files["metadata"])
    assert meta["created"] == "2026-11-23T12:00:00Z" and meta["fingerprint"] == generation.facts.fingerprint
    assert b"PRIVATE KEY" not in generation.files["metadata"]


def test_prune_keeps_the_newest_and_the_protected(tmp_path):
    names = ["20260101-000000", "20260201-000000", "20260301-000000", "20260301-000000-1", "20260401-000000"]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "signing_key.crt").write_text("x")
    (tmp_path / "notes").mkdir()                      # not a generation: never touched
    keygen.swap_current(str(tmp_path), "20260401-000000")
    removed = keygen.prune(str(tmp_path), 2, "20260401-000000")
    assert [os.path.basename(p) for p in removed] == names[:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20260301-000000-1", "20260401-000000", "current", "notes"]
    assert os.readlink(tmp_path / "current") == "20260401-000000"


def test_validity_window_read_without_cryptography_matches_openssl(tmp_path):
    from ansible_collections.skm.modsign.plugins.module_utils import _keys as keys
    spec = keygen.KeySpec("ecdsa", 256, "sha256", validity_days=40000)     # notAfter past 2049: GeneralizedTime
    generation = keygen.make_generation(spec, None, NOW)
    valid_from, valid_to = keys.validity_window(generation.files["certificate_der"])
    (tmp_path / "c.der").write_bytes(generation.files["certificate_der"])
    dates = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(tmp_path / "c.der"), "-noout", "-dates",
                            "-dateopt", "iso_8601"], capture_output=True, text=True, check=True).stdout
    assert f"notBefore={valid_from:%Y-%m-%d %H:%M:%S}Z" in dates and f"notAfter={valid_to:%Y-%m-%d %H:%M:%S}Z" in dates
    keys.check_valid_now(valid_from, valid_to, "c.der", NOW)
    with pytest.raises(ModSignError, match="not valid before"):
        keys.check_valid_now(valid_from, valid_to, "c.der", valid_from - datetime.timedelta(seconds=1))
    with pytest.raises(ModSignError, match="expired on"):
        keys.check_valid_now(valid_from, valid_to, "c.der", valid_to + datetime.timedelta(seconds=1))


def test_metadata_rebuilt_from_key_and_certificate(tmp_path):
    """Issue 16 2.3: the key is kept, skm-key.json comes back with the certificate's facts."""
    spec = keygen.KeySpec("ecdsa", 256, "sha256")
    generation = keygen.make_generation(spec, None, NOW)
    keygen.write_generation(str(tmp_path), generation)
    (tmp_path / "skm-key.json").write_text("{")
    existing = keygen.inspect(str(tmp_path), None, NOW + datetime.timedelta(days=1), spec)
    assert existing.problem is None and list(existing.repairs) == ["metadata"]
    assert existing.facts.fingerprint == generation.facts.fingerprint
    meta = json.loads(existing.repairs["metadata"])
    assert meta["hash"] == "sha256" and meta["profile"] == "signing" and meta["created"] == "2026-11-23T11:55:00Z"
    assert keygen.decide(existing, spec, "partial_idempotence", None, NOW) is None


def test_failed_staging_touches_nothing(tmp_path):
    from ansible_collections.skm.modsign.plugins.module_utils import _key_set as key_set
    (tmp_path / "a").write_bytes(b"old")
    files = [key_set.KeyFile("a", b"new", 0o644), key_set.KeyFile("bad/name", b"x", 0o600)]
    with pytest.raises(key_set.SetWriteError) as caught:
        key_set.write_in_place(str(tmp_path), files, previous=str(tmp_path / "previous" / "x"))
    assert caught.value.written == [] and len(caught.value.not_written) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"] and (tmp_path / "a").read_bytes() == b"old"
