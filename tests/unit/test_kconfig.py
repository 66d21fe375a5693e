"""The .config editor: byte-for-byte preservation, choice groups, missing lines added, bad input refused."""

from __future__ import annotations

import pytest

from ansible_collections.skm.modsign.plugins.module_utils import _kconfig as kconfig
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

SAMPLE = """#
# Automatically generated file; DO NOT EDIT.
# Linux/x86 6.1.0 Kernel Configuration
#
CONFIG_MODULES=y
CONFIG_MODULE_SIG=y
# CONFIG_MODULE_SIG_FORCE is not set
CONFIG_MODULE_SIG_ALL=y
# CONFIG_MODULE_SIG_SHA1 is not set
# CONFIG_MODULE_SIG_SHA224 is not set
CONFIG_MODULE_SIG_SHA256=y
# CONFIG_MODULE_SIG_SHA384 is not set
# CONFIG_MODULE_SIG_SHA512 is not set
CONFIG_MODULE_SIG_HASH="sha256"
CONFIG_MODULE_COMPRESS_NONE=y
CONFIG_CRYPTO_SHA512=m
CONFIG_LOCALVERSION="  odd  spacing kept "
"""


def test_untouched_when_nothing_asked_and_identical_when_already_set():
    text, changes = kconfig.edit(SAMPLE, kconfig.Settings(sig=None))
    assert text == SAMPLE and changes == []
    text, changes = kconfig.edit(SAMPLE, kconfig.Settings(hash_name="sha256", builtin_crypto=False))
    assert text == SAMPLE and changes == []


def test_hash_choice_group_and_builtin_crypto():
    text, changes = kconfig.edit(SAMPLE, kconfig.Settings(hash_name="sha512"))
    values = kconfig.values(kconfig.parse_config(text))
    chosen = [n for n in values if n.startswith("CONFIG_MODULE_SIG_SHA") and values[n] == "y"]
    assert chosen == ["CONFIG_MODULE_SIG_SHA512"]
    assert values["CONFIG_MODULE_SIG_SHA256"] == "n" and values["CONFIG_MODULE_SIG_HASH"] == '"sha512"'
    assert values["CONFIG_CRYPTO_SHA512"] == "y"
    assert "# CONFIG_MODULE_SIG_SHA256 is not set\n" in text
    # Lines we did not ask about are byte for byte the same, in the same place.
    old_lines, new_lines = SAMPLE.split("\n"), text.split("\n")
    touched = {c["name"] for c in changes}
    for old, new in zip(old_lines, new_lines):
        if not any(name in old for name in touched):
            assert old == new
    assert {c["name"] for c in changes} >= {"CONFIG_MODULE_SIG_SHA512", "CONFIG_MODULE_SIG_SHA256"}


def test_missing_lines_are_added_before_the_final_newline():
    text, changes = kconfig.edit(SAMPLE, kconfig.Settings(key="certs/signing_key.pem", key_type="ecdsa",
                                                          hash_name="sha384", trusted_keys="certs/fleet.pem"))
    assert text.endswith('CONFIG_SYSTEM_TRUSTED_KEYS="certs/fleet.pem"\n')
    values = kconfig.values(kconfig.parse_config(text))
    assert values["CONFIG_MODULE_SIG_KEY"] == '"certs/signing_key.pem"'
    assert values["CONFIG_MODULE_SIG_KEY_TYPE_ECDSA"] == "y" and values.get("CONFIG_MODULE_SIG_KEY_TYPE_RSA", "n") == "n"
    assert values["CONFIG_CRYPTO_ECDSA"] == "y"
    added = [c for c in changes if c["before"] is None]
    assert {"CONFIG_MODULE_SIG_KEY", "CONFIG_SYSTEM_TRUSTED_KEYS", "CONFIG_CRYPTO_ECDSA"} <= {c["name"] for c in added}
    again, more = kconfig.edit(text, kconfig.Settings(key="certs/signing_key.pem", key_type="ecdsa",
                                                      hash_name="sha384", trusted_keys="certs/fleet.pem"))
    assert again == text and more == []


def test_quotes_in_strings_are_escaped():
    text, _changes = kconfig.edit(SAMPLE, kconfig.Settings(key='weird "name".pem'))
    assert 'CONFIG_MODULE_SIG_KEY="weird \\"name\\".pem"' in text


@pytest.mark.parametrize("settings,words", [
    (kconfig.Settings(key_type="ecdsa", hash_name="sha256"), "MODULE_SIG_KEY_TYPE_ECDSA depend"),
    (kconfig.Settings(key_type="ecdsa", hash_name="sha3-256"), "use sha384 or sha512"),
    (kconfig.Settings(decompress=True), "needs compress"),
    (kconfig.Settings(extra={"MODULE_SIG": "y"}), "not a CONFIG_ name"),
])
def test_impossible_combinations_refused(settings, words):
    with pytest.raises(ModSignError, match=words):
        kconfig.edit(SAMPLE, settings)


@pytest.mark.parametrize("text,words", [
    ("", "no CONFIG_ option"),
    ("[Unit]\nDescription=not a config\n", "line 1"),
    ("CONFIG_A=y\nexport PATH=/bin\n", "line 2"),
    ("CONFIG_A=y\n\0\0", "binary"),
    ("CONFIG_A=y\rCONFIG_B=m\r# CONFIG_C is not set\r", "carriage return inside a value"),
])
def test_not_a_kernel_config(text, words):
    with pytest.raises(ModSignError, match=words):
        kconfig.parse_config(text, "somefile")


def test_absent_choice_members_stay_absent_present_ones_are_unset():
    # SAMPLE has SHA1..SHA512 but, like every 6.1 config, no SHA3_* and no KEY_TYPE_* lines.
    text, changes = kconfig.edit(SAMPLE, kconfig.Settings(hash_name="sha384", key_type="rsa"))
    assert "SHA3_" not in text and "CONFIG_MODULE_SIG_KEY_TYPE_ECDSA" not in text
    assert "CONFIG_MODULE_SIG_KEY_TYPE_RSA=y\n" in text
    assert "# CONFIG_MODULE_SIG_SHA256 is not set\n" in text and "CONFIG_MODULE_SIG_SHA384=y\n" in text
    # What olddefconfig does to a 6.1 config (drops unknown options) changes nothing for the next run.
    assert kconfig.edit(text, kconfig.Settings(hash_name="sha384", key_type="rsa")) == (text, [])


def test_every_duplicate_line_is_rewritten():
    text = "CONFIG_MODULE_SIG=y\nCONFIG_MODULE_SIG_FORCE=y\n# CONFIG_MODULE_SIG_FORCE is not set\n"
    new, changes = kconfig.edit(text, kconfig.Settings(sig_force=True))
    assert new == "CONFIG_MODULE_SIG=y\nCONFIG_MODULE_SIG_FORCE=y\nCONFIG_MODULE_SIG_FORCE=y\n"
    assert changes == [{"name": "CONFIG_MODULE_SIG_FORCE", "before": "n", "after": "y"}]
    assert kconfig.edit(new, kconfig.Settings(sig_force=True)) == (new, [])


@pytest.mark.parametrize("settings", [
    kconfig.Settings(key="certs/key.pem\nCONFIG_MODULE_SIG_FORCE=n"),
    kconfig.Settings(trusted_keys="a\rb"),
    kconfig.Settings(extra={"CONFIG_LOCALVERSION": '"x"\nCONFIG_MODULES=n'}),
])
def test_values_cannot_inject_lines(settings):
    with pytest.raises(ModSignError, match="one line"):
        kconfig.edit(SAMPLE, settings)


HEADER_61 = "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86 6.1.0-56-amd64 Kernel Configuration\n#\n"
HEADER_67 = "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86_64 6.7.0 Kernel Configuration\n#\n"
BODY = "CONFIG_MODULE_SIG=y\nCONFIG_MODULE_SIG_SHA512=y\nCONFIG_MODULE_SIG_HASH=\"sha512\"\n"


def test_kernel_version_from_the_header():
    assert kconfig.kernel_version(kconfig.parse_config(HEADER_61 + BODY)) == (6, 1)
    assert kconfig.kernel_version(kconfig.parse_config(HEADER_67 + BODY)) == (6, 7)
    assert kconfig.kernel_version(kconfig.parse_config(BODY)) is None


def test_sha3_refused_for_a_kernel_older_than_6_7():
    with pytest.raises(ModSignError, match="Linux 6.1, which has no CONFIG_MODULE_SIG_SHA3_384") as info:
        kconfig.edit(HEADER_61 + BODY, kconfig.Settings(hash_name="sha3-384"), "conf/config.x86_64")
    assert info.value.path == "conf/config.x86_64"
    text, _changes = kconfig.edit(HEADER_67 + BODY, kconfig.Settings(hash_name="sha3-384"))
    assert "CONFIG_MODULE_SIG_SHA3_384=y\n" in text and "# CONFIG_MODULE_SIG_SHA512 is not set\n" in text
    kconfig.edit(BODY, kconfig.Settings(hash_name="sha3-512"))   # no header: nothing to judge by


def test_refusals_judge_the_resulting_config_not_only_the_options():
    # ECDSA asked for, the hash left as the file has it (sha256): still the combination certs/Kconfig forbids.
    with pytest.raises(ModSignError, match="ECDSA .* sha256"):
        kconfig.edit(SAMPLE, kconfig.Settings(key_type="ecdsa"))
    # decompress with the file's own compression is fine; with none it is refused.
    xz = SAMPLE.replace("CONFIG_MODULE_COMPRESS_NONE=y", "CONFIG_MODULE_COMPRESS_XZ=y")
    text, _changes = kconfig.edit(xz, kconfig.Settings(decompress=True))
    assert "CONFIG_MODULE_DECOMPRESS=y\n" in text
    with pytest.raises(ModSignError, match="needs compress"):
        kconfig.edit(SAMPLE, kconfig.Settings(decompress=True, compress="none"))


@pytest.mark.parametrize("data,words", [
    (b"CONFIG_A=y\n\xff\xfe\n", "not UTF-8"),
    (12, "expected text"),
    (None, "expected text"),
])
def test_parse_refuses_what_is_not_text(data, words):
    with pytest.raises(ModSignError, match=words):
        kconfig.parse_config(data, "x")


def test_bytes_and_text_parse_alike():
    assert kconfig.parse_config(SAMPLE.encode()) == kconfig.parse_config(SAMPLE)


hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

_config_lines = st.one_of(
    st.from_regex(r"\ACONFIG_[A-Z0-9_]{1,12}=(y|m|n|[0-9]{1,4}|\"[a-z/. ]{0,10}\")\Z"),
    st.from_regex(r"\A# CONFIG_[A-Z0-9_]{1,12} is not set\Z"),
    st.sampled_from(["", "#", "# comment", "# CONFIG_MODULE_SIG_SHA3_256 is not set", "CONFIG_MODULE_SIG_SHA256=y",
                     "CONFIG_MODULE_SIG_KEY_TYPE_RSA=y", "CONFIG_MODULE_COMPRESS_XZ=y", "CONFIG_MODULE_SIG=m"]),
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.one_of(st.text(), st.binary()))
def test_parse_raises_only_modsignerror(data):
    try:
        lines = kconfig.parse_config(data)
    except ModSignError:
        return
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    assert kconfig.render(lines) == text


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(st.lists(_config_lines, min_size=1, max_size=30).map("\n".join),
                  st.sampled_from([None, "sha256", "sha384", "sha512"]), st.sampled_from([None, "rsa", "ecdsa"]),
                  st.sampled_from([None, "none", "gzip", "xz", "zstd"]), st.sampled_from([None, True, False]))
def test_edit_keeps_other_lines_and_is_idempotent(text, hash_name, key_type, compress, force):
    hypothesis.assume("CONFIG_" in text)
    settings = kconfig.Settings(hash_name=hash_name, key_type=key_type, compress=compress, sig_force=force)
    try:
        new, changes = kconfig.edit(text, settings)
    except ModSignError as exc:
        assert "ECDSA" in str(exc)   # the only refusal these settings can meet
        return
    assert kconfig.edit(new, settings) == (new, [])
    touched = {c["name"] for c in changes}
    kept_old = [line for line in text.split("\n") if not any(n + "=" in line or n + " " in line for n in touched)]
    kept_new = [line for line in new.split("\n") if not any(n + "=" in line or n + " " in line for n in touched)]
    assert kept_new == kept_old


def test_off_where_absence_means_off():
    # sig_force off: the file's own "is not set" line stays; nothing is added where the option is absent,
    # because olddefconfig drops "is not set" of an option whose dependencies are unmet (decompress, no
    # compression) and adding it back on every run would never be idempotent.
    text, changes = kconfig.edit(SAMPLE, kconfig.Settings(sig_force=False, decompress=False,
                                                          allow_missing_namespace_imports=False))
    assert text == SAMPLE and changes == []
    forced = SAMPLE.replace("# CONFIG_MODULE_SIG_FORCE is not set", "CONFIG_MODULE_SIG_FORCE=y")
    text, changes = kconfig.edit(forced, kconfig.Settings(sig_force=False))
    assert text == SAMPLE and changes == [{"name": "CONFIG_MODULE_SIG_FORCE", "before": "y", "after": "n"}]
    # MODULE_SIG_ALL defaults to y: off must be written.
    text, _changes = kconfig.edit(SAMPLE.replace("CONFIG_MODULE_SIG_ALL=y\n", ""), kconfig.Settings(sig_all=False))
    assert "# CONFIG_MODULE_SIG_ALL is not set\n" in text


def test_zstd_decompress_refused_for_61():
    zstd = BODY + "CONFIG_MODULE_COMPRESS_ZSTD=y\n"
    with pytest.raises(ModSignError, match="gzip and xz modules only"):
        kconfig.edit(HEADER_61 + zstd, kconfig.Settings(decompress=True))
    text, _changes = kconfig.edit(HEADER_61 + zstd, kconfig.Settings(decompress=True, compress="xz"))
    assert "CONFIG_MODULE_COMPRESS_XZ=y\n" in text and "# CONFIG_MODULE_COMPRESS_ZSTD is not set\n" in text
    kconfig.edit(HEADER_67 + zstd, kconfig.Settings(decompress=True))


# --- CRLF (issue 16, 2.12) -------------------------------------------------------------------------------

CRLF = SAMPLE.replace("\n", "\r\n")


def test_crlf_lines_are_recognised_in_both_forms():
    found = kconfig.values(kconfig.parse_config(CRLF))
    assert found == kconfig.values(kconfig.parse_config(SAMPLE))   # no "\r" in a value, "is not set" seen
    assert kconfig.render(kconfig.parse_config(CRLF)) == CRLF
    assert kconfig.kernel_version(kconfig.parse_config(CRLF)) == (6, 1)


def test_crlf_edit_keeps_crlf_and_adds_no_duplicates():
    settings = kconfig.Settings(hash_name="sha512", sig_force=True, key="certs/k.pem", trusted_keys="certs/t.pem")
    text, changes = kconfig.edit(CRLF, settings)
    lf_text, lf_changes = kconfig.edit(SAMPLE, settings)
    assert text == lf_text.replace("\n", "\r\n") and changes == lf_changes
    assert text.count("\n") == text.count("\r\n") and "\r\r" not in text
    assert "CONFIG_MODULE_SIG_FORCE=y\r\n" in text and text.count("CONFIG_MODULE_SIG_FORCE") == 1
    assert text.count("CONFIG_MODULE_SIG_SHA384") == 1
    assert kconfig.edit(text, settings) == (text, [])


def test_line_ending_of_a_mixed_file():
    # A rewritten line keeps its own ending; a new line takes the ending most lines have.
    mixed = "CONFIG_A=y\r\n# CONFIG_MODULE_SIG_FORCE is not set\n# CONFIG_B is not set\r\n"
    text, _changes = kconfig.edit(mixed, kconfig.Settings(sig=True, sig_force=True))
    assert text == "CONFIG_A=y\r\nCONFIG_MODULE_SIG_FORCE=y\n# CONFIG_B is not set\r\nCONFIG_MODULE_SIG=y\r\n"
    no_final_newline = "CONFIG_A=y\r\n# CONFIG_MODULE_SIG_FORCE is not set\r"
    text, _changes = kconfig.edit(no_final_newline, kconfig.Settings(sig=None, sig_force=True))
    assert text == "CONFIG_A=y\r\nCONFIG_MODULE_SIG_FORCE=y\r"
    assert kconfig.line_ending(kconfig.parse_config("CONFIG_A=y\n")) == "\n"
    assert kconfig.line_ending(kconfig.parse_config("CONFIG_A=y")) == "\n"
    assert kconfig.line_ending(kconfig.parse_config(CRLF)) == "\r\n"
