"""Property-based tests (hypothesis) for every parser that reads untrusted bytes, and a short atheris run.

The properties live in tests/fuzz/properties.py (shared with `make fuzz`): no input raises anything but
ModSignError, an accepted input re-assembles to itself, and sign_module_file never changes a file it
refuses. Here hypothesis feeds them both raw bytes and near-valid inputs (a real signed module, PKCS#7
blob, certificate or kernel config with bytes flipped, cut or spliced), and checks the round trips
against inputs made by our builders and by openssl (the certificates). The last test runs each atheris
harness of tests/fuzz/ for a few seconds (`make fuzz` runs them longer).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from ansible_collections.skm.modsign.plugins.module_utils import _compression as compression
from ansible_collections.skm.modsign.plugins.module_utils import _pkcs7 as pkcs7
from ansible_collections.skm.modsign.plugins.module_utils import _signing as signing
from ansible_collections.skm.modsign.plugins.module_utils import _trailer as trailer
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from tests.fuzz import properties

REPO = pathlib.Path(__file__).resolve().parents[2]
FUZZ_DIR = REPO / "tests" / "fuzz"
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def keys(session_keys):
    """An RSA and an ECDSA key (openssl-made), each with its certificate's DER."""
    made = {}
    for kind in ("rsa2048", "p256"):
        key = session_keys(kind)
        made[kind] = signing.SigningKey.from_files(str(key.key), str(key.cert), hash_name="sha256")
    return made


@pytest.fixture(scope="module")
def samples(keys):
    """Valid inputs of each kind to mutate: signed modules, PKCS#7 blobs, certificates, streams."""
    module = properties.small_elf()
    signed = [key.sign_payload(module) for key in keys.values()]
    blobs = [trailer.parse_signature(s).pkcs7 for s in signed]
    certs = [key.certificate.der for key in keys.values()]
    streams = [compression.compress(kind, s) for kind in properties.KINDS for s in signed]
    return {"signed": signed, "pkcs7": blobs, "certs": certs, "streams": streams}


def mutate(data: bytes, draw) -> bytes:
    """Flip, cut, insert or splice a few bytes of a valid input."""
    out = bytearray(data)
    for _step in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "truncate", "splice"]))
        pos = draw(st.integers(0, max(0, len(out) - 1)))
        if action == "flip" and out:
            out[pos] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del out[pos:pos + draw(st.integers(1, 16))]
        elif action == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif action == "truncate":
            del out[pos:]
        else:
            out[pos:pos + 4] = draw(st.sampled_from([b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x80",
                                                     b"\x30\x84\xff\xff", b"\x02\x81\x80", b"\xa0\x00"]))
    return bytes(out)


# --- no input raises anything but ModSignError ---------------------------------------------------------

@SETTINGS
@given(st.binary(max_size=512))
def test_raw_bytes_only_modsignerror(data):
    properties.check_trailer(data)
    properties.check_pkcs7(data)
    properties.check_certificate(data)
    properties.check_compression(data)
    properties.check_kconfig(data)


@SETTINGS
@given(data=st.data())
def test_mutated_signed_modules(samples, data):
    original = data.draw(st.sampled_from(samples["signed"]))
    properties.check_trailer(mutate(original, data.draw))


@SETTINGS
@given(data=st.data())
def test_mutated_pkcs7_and_certificates(samples, data):
    properties.check_pkcs7(mutate(data.draw(st.sampled_from(samples["pkcs7"])), data.draw))
    properties.check_certificate(mutate(data.draw(st.sampled_from(samples["certs"])), data.draw))


@SETTINGS
@given(data=st.data())
def test_mutated_streams(samples, data):
    properties.check_compression(mutate(data.draw(st.sampled_from(samples["streams"])), data.draw))


KCONFIG_LINE = st.one_of(
    st.builds("CONFIG_{}={}".format, st.from_regex(r"[A-Z0-9_]{1,12}", fullmatch=True),
              st.sampled_from(["y", "m", "\"certs/signing_key.pem\"", "0x10", "\"a\\\"b\"", ""])),
    st.builds("# CONFIG_{} is not set".format, st.from_regex(r"[A-Z0-9_]{1,12}", fullmatch=True)),
    st.sampled_from(["", "#", "# Linux/x86 6.1.0 Kernel Configuration", "# comment"]),
    st.text(max_size=30),
)


@pytest.mark.skipif(properties.kconfig is None, reason="plugins/module_utils/_kconfig.py not there yet")
@SETTINGS
@given(st.lists(KCONFIG_LINE, max_size=20), st.booleans())
def test_kconfig_lines_round_trip_or_modsignerror(lines, final_newline):
    text = "\n".join(lines) + ("\n" if final_newline else "")
    properties.check_kconfig(text.encode("utf-8"))


# --- round trips ---------------------------------------------------------------------------------------

@SETTINGS
@given(st.binary(max_size=256), st.binary(min_size=1, max_size=600))
def test_append_then_parse_gives_payload_and_pkcs7(tail, blob):
    payload = trailer.ELF_MAGIC + tail
    sig = trailer.parse_signature(trailer.append_signature(payload, blob))
    assert sig == trailer.ModuleSignature(payload, blob)


@SETTINGS
@given(st.sampled_from(["rsa2048", "p256"]), st.sampled_from(sorted(pkcs7.HASHES)), st.booleans(),
       st.binary(min_size=1, max_size=600))
def test_build_then_parse_signed_data(keys, kind, hash_name, use_skid, signature):
    cert = keys[kind].certificate
    try:
        blob = pkcs7.build_signed_data(cert, hash_name, signature, use_skid=use_skid)
    except ModSignError:
        # a combination the core refuses to build (e.g. a hash it does not sign with): nothing to parse
        return
    (signer,) = pkcs7.parse_signed_data(blob)
    assert signer.signature == signature
    assert signer.hash_name == hash_name
    assert signer.key_algorithm == ("rsa" if kind.startswith("rsa") else "ecdsa")
    assert cert.matches(signer.signer)
    assert (signer.signer.skid is not None) == use_skid


@SETTINGS
@given(st.sampled_from(properties.KINDS), st.binary(max_size=2048))
def test_compress_then_decompress(kind, data):
    assume(kind != compression.NONE or compression.detect(data) == compression.NONE)
    packed = compression.compress(kind, data)
    assert compression.detect(packed) == kind
    assert compression.decompress(packed) == (kind, data)


# --- the signer never writes a file it refuses -------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_sign_module_file_on_fuzzed_files(keys, samples, data):
    source = data.draw(st.sampled_from(["raw", "mutated-signed", "mutated-stream", "plain-elf"]))
    if source == "raw":
        content = data.draw(st.binary(max_size=300))
    elif source == "mutated-signed":
        content = mutate(data.draw(st.sampled_from(samples["signed"])), data.draw)
    elif source == "mutated-stream":
        content = mutate(data.draw(st.sampled_from(samples["streams"])), data.draw)
    else:
        content = compression.compress(data.draw(st.sampled_from(properties.KINDS)),
                                       trailer.ELF_MAGIC + data.draw(st.binary(max_size=200)))
    key = data.draw(st.sampled_from(sorted(keys)))
    with tempfile.TemporaryDirectory() as tmp:
        properties.check_sign_file(content, keys[key], tmp)


def test_sign_module_file_checker_sees_a_change(keys, tmp_path):
    """The property above can fail: an unsigned module is signed (the file changes, the signature parses)."""
    plain = properties.small_elf()
    path = tmp_path / "fuzz.ko"
    path.write_bytes(plain)
    outcome = signing.sign_module_file(str(path), keys["p256"])
    assert outcome.status == signing.SIGNED
    assert path.read_bytes() != plain and path.read_bytes().startswith(plain)


# --- atheris, bounded ----------------------------------------------------------------------------------

FUZZ_TARGETS = sorted(p.name for p in FUZZ_DIR.glob("fuzz_*.py"))
ATHERIS_SECONDS = int(os.environ.get("SKM_ATHERIS_SECONDS", "2"))


@pytest.mark.parametrize("target", FUZZ_TARGETS)
def test_atheris_bounded_run(target, tmp_path):
    pytest.importorskip("atheris", reason="atheris not installed (pip install atheris; `make fuzz` needs it)")
    proc = subprocess.run(
        [sys.executable, str(FUZZ_DIR / target), "-max_total_time=%d" % ATHERIS_SECONDS,
         "-rss_limit_mb=2048", "-artifact_prefix=%s/" % tmp_path, "-print_final_stats=1"],
        capture_output=True, text=True, timeout=ATHERIS_SECONDS + 120, check=False)
    runs = [line for line in proc.stderr.splitlines() if line.startswith("stat::number_of_executed_units")]
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert runs and int(runs[0].split(":")[-1]) > 100, proc.stderr[-2000:]
