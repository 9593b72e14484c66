"""Field encryption for secrets at rest: AES-256-GCM under named, rotatable keys. No I/O.

Invariants:
- Every encryption uses a fresh random 96-bit nonce; the blob is ``nonce || ciphertext || tag``.
- The associated data binds account id, key id and field name, so a blob only decrypts in the
  row and column it was written for.
- Errors and reprs never contain plaintext or key material.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
_TAG_BYTES = 16
_AD_VERSION = b"iw/v1"
# Key ids and field names go into the associated data between "|" separators, so they must not
# contain one; a conservative alphabet also keeps them safe to log.
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class DecryptionError(Exception):
    """A blob could not be decrypted: unknown key id, wrong row/field, or tampered data."""


def generate_key() -> bytes:
    """A new random 256-bit key."""
    return os.urandom(KEY_BYTES)


def _associated_data(account_id: UUID, key_id: str, field: str) -> bytes:
    return b"|".join((_AD_VERSION, str(account_id).encode(), key_id.encode(), field.encode()))


def _check_name(kind: str, value: str) -> None:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(f"invalid {kind} {value!r}: must match {_NAME_RE.pattern}")


class Keyring:
    """Named AES-256 keys; new ciphertexts use ``active_key_id``, any known key decrypts."""

    __slots__ = ("_ciphers", "active_key_id", "key_ids")

    def __init__(self, active_key_id: str, keys: Mapping[str, bytes]) -> None:
        for key_id, key in keys.items():
            _check_name("key id", key_id)
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id!r} must be {KEY_BYTES} bytes, got {len(key)}")
        if active_key_id not in keys:
            raise ValueError(f"active key id {active_key_id!r} is not in the keyring")
        self.active_key_id = active_key_id
        self.key_ids = frozenset(keys)
        self._ciphers = MappingProxyType({k: AESGCM(bytes(v)) for k, v in keys.items()})

    def __repr__(self) -> str:
        return f"Keyring(active_key_id={self.active_key_id!r}, key_ids={sorted(self.key_ids)!r})"

    def encrypt(self, plaintext: str, *, account_id: UUID, field: str) -> tuple[str, bytes]:
        """Encrypt under the active key; return ``(key_id, nonce || ciphertext)``."""
        _check_name("field", field)
        key_id = self.active_key_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(
            nonce, plaintext.encode(), _associated_data(account_id, key_id, field)
        )
        return key_id, nonce + sealed

    def decrypt(self, key_id: str, blob: bytes, *, account_id: UUID, field: str) -> str:
        """Decrypt a blob written by ``encrypt`` for this account and field."""
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise DecryptionError(f"{field} of account {account_id}: unknown key id {key_id!r}")
        if len(blob) < NONCE_BYTES + _TAG_BYTES:
            raise DecryptionError(f"{field} of account {account_id}: ciphertext too short")
        try:
            plaintext = cipher.decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], _associated_data(account_id, key_id, field)
            )
        except InvalidTag:
            # Deliberately no detail: wrong row, wrong field and tampering look the same.
            raise DecryptionError(
                f"{field} of account {account_id}: authentication failed (key id {key_id!r})"
            ) from None
        return plaintext.decode()
