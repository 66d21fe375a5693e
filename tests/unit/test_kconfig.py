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
    text, _ = kconfig.edit(SAMPLE, kconfig.Settings(key='weird "name".pem'))
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
])
def test_not_a_kernel_config(text, words):
    with pytest.raises(ModSignError, match=words):
        kconfig.parse_config(text, "somefile")
