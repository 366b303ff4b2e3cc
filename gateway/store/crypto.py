"""Encryption at rest of registration credentials (DESIGN.md §5, §6 "Access").

The secret values of an XEP-0077 registration form (IRC SASL or NickServ
passwords, SIP digest passwords) are stored as one Fernet token: AES-128-CBC
with an HMAC-SHA256 over it, from :mod:`cryptography`. The key comes from the
configuration or the environment, never from the database, so a copy of the
database alone does not reveal the passwords.

Nothing in this module logs, and no message it raises contains a key or a
plaintext value: exceptions end up in logs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from cryptography.fernet import Fernet, InvalidToken

__all__ = ["CredentialCipher", "CredentialKeyError", "generate_key"]


class CredentialKeyError(Exception):
    """Stored credentials cannot be decrypted with the configured key."""


def generate_key() -> str:
    """Return a new random key, suitable for :class:`CredentialCipher` and for the config."""
    return Fernet.generate_key().decode("ascii")


class CredentialCipher:
    """Encrypts and decrypts a registration's secret form values with one key.

    :param key: a Fernet key: 32 random bytes, URL-safe base64 encoded (44
        characters), as made by :func:`generate_key`.
    :raises ValueError: if ``key`` is not such a key. The message never repeats
        the key, since a near-miss key is still mostly secret.
    """

    __slots__ = ("_fernet",)

    def __init__(self, key: str) -> None:
        try:
            # Strip: a key read from a file or an environment variable often
            # carries a trailing newline, and a Fernet key never has whitespace.
            self._fernet = Fernet(key.strip())
        except (ValueError, TypeError, AttributeError):
            # ``from None``: the chained exception adds nothing useful, and
            # keeping tracebacks short keeps secrets away from log scrapers.
            raise ValueError(
                "the credential key is not a valid Fernet key: it must be 32 random bytes "
                "in URL-safe base64 (44 characters); generate one with "
                "gateway.store.crypto.generate_key()"
            ) from None

    def __repr__(self) -> str:
        # The default repr is harmless, but say so explicitly: no key material here.
        return "<CredentialCipher>"

    def encrypt(self, values: Mapping[str, str]) -> bytes:
        """Encrypt the secret form values into a token for ``registration.credentials``.

        :param values: field name to value, both strings.
        :raises TypeError: if a name or value is not a string (the value is not shown).
        """
        for name, value in values.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError(f"credential field {name!r} must map a str name to a str value")
        # Compact, key-sorted JSON so that equal inputs give equal plaintexts.
        plaintext = json.dumps(
            dict(values), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
        return self._fernet.encrypt(plaintext)

    def decrypt(self, blob: bytes) -> dict[str, str]:
        """Decrypt a token made by :meth:`encrypt` back into the form values.

        :raises CredentialKeyError: if the token was made with another key or was
            altered (Fernet authenticates it, so the two cannot be told apart).
        """
        try:
            plaintext = self._fernet.decrypt(bytes(blob))
        except InvalidToken:
            raise CredentialKeyError(
                "stored credentials cannot be decrypted with the configured credential key: "
                "the key differs from the one they were encrypted with, or the data is damaged"
            ) from None
        decoded = json.loads(plaintext.decode("utf-8"))
        # A valid token holds what encrypt() wrote; anything else means the key
        # was used by other software, which is worth a clear error, not a crash later.
        if not isinstance(decoded, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in decoded.items()
        ):
            raise CredentialKeyError("stored credentials decrypted to something other than a map of strings")
        return decoded
