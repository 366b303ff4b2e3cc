"""Credentials at rest: gateway.store.crypto (DESIGN.md §5, §6 "secrets never logged")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.store.crypto import CredentialCipher, CredentialKeyError, generate_key

KEY = generate_key()
SECRETS = {"password": "correct horse battery staple", "sasl_password": "hunter2-ünïcødé"}


def test_round_trip() -> None:
    """Decrypting what was encrypted gives back the same values."""
    cipher = CredentialCipher(generate_key())
    assert cipher.decrypt(cipher.encrypt(SECRETS)) == SECRETS


@given(st.dictionaries(st.text(), st.text(), max_size=8))
def test_round_trip_any_strings(values: dict[str, str]) -> None:
    """Any map of strings, including empty and non-ASCII ones, survives the round trip."""
    cipher = CredentialCipher(KEY)
    assert cipher.decrypt(cipher.encrypt(values)) == values


def test_key_with_trailing_newline_is_accepted() -> None:
    """A key read from a file with its trailing newline still works."""
    cipher = CredentialCipher(KEY + "\n")
    assert CredentialCipher(KEY).decrypt(cipher.encrypt(SECRETS)) == SECRETS


def test_wrong_key_raises_credential_key_error() -> None:
    """Decrypting with another key raises CredentialKeyError with a clear message."""
    blob = CredentialCipher(generate_key()).encrypt(SECRETS)
    with pytest.raises(CredentialKeyError, match="credential key") as excinfo:
        CredentialCipher(generate_key()).decrypt(blob)
    assert "hunter2" not in str(excinfo.value)


def test_tampered_blob_raises_credential_key_error() -> None:
    """A modified ciphertext is rejected, not decrypted to garbage."""
    cipher = CredentialCipher(KEY)
    blob = bytearray(cipher.encrypt(SECRETS))
    blob[-5] ^= 0x01
    with pytest.raises(CredentialKeyError):
        cipher.decrypt(bytes(blob))


@pytest.mark.parametrize(
    "bad_key",
    [
        "not-a-key-but-a-secret-passphrase",
        "A" * 43,  # one character short
        KEY[:-2] + "!!",  # right length, not base64
        "",
    ],
)
def test_invalid_key_message_does_not_echo_the_key(bad_key: str) -> None:
    """An invalid key raises ValueError whose message explains it without repeating the key."""
    with pytest.raises(ValueError, match="not a valid Fernet key") as excinfo:
        CredentialCipher(bad_key)
    message = str(excinfo.value)
    if bad_key:
        assert bad_key not in message
        assert bad_key[:12] not in message
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__suppress_context__


def test_ciphertext_does_not_contain_the_plaintext() -> None:
    """Neither field names nor values appear in the stored blob, and equal inputs differ."""
    cipher = CredentialCipher(KEY)
    blob = cipher.encrypt(SECRETS)
    for text in (*SECRETS, *SECRETS.values()):
        assert text.encode("utf-8") not in blob
    assert cipher.encrypt(SECRETS) != blob  # random IV per token


def test_repr_shows_no_key_material() -> None:
    """The cipher's repr holds nothing from the key."""
    assert KEY not in repr(CredentialCipher(KEY))
    assert repr(CredentialCipher(KEY)) == "<CredentialCipher>"


def test_non_string_values_are_refused() -> None:
    """Only str to str maps are encrypted; the error names the field, not the value."""
    with pytest.raises(TypeError, match="password") as excinfo:
        CredentialCipher(KEY).encrypt({"password": 1234})  # type: ignore[dict-item]
    assert "1234" not in str(excinfo.value)
