"""Keyring: AES-256-GCM blobs bound to account, key id and field."""

from __future__ import annotations

import uuid

import pytest

from store.crypto import NONCE_BYTES, DecryptionError, Keyring, generate_key

SECRET = "1//0refresh-token-value"


def test_round_trip_uses_active_key(keyring: Keyring) -> None:
    account_id = uuid.uuid4()
    key_id, blob = keyring.encrypt(SECRET, account_id=account_id, field="refresh_token")
    assert key_id == "k1"
    assert SECRET.encode() not in blob
    assert keyring.decrypt(key_id, blob, account_id=account_id, field="refresh_token") == SECRET


def test_empty_and_unicode_plaintexts_round_trip(keyring: Keyring) -> None:
    account_id = uuid.uuid4()
    for plaintext in ("", "tökén ✓"):
        key_id, blob = keyring.encrypt(plaintext, account_id=account_id, field="f")
        assert keyring.decrypt(key_id, blob, account_id=account_id, field="f") == plaintext


def test_ciphertext_moved_to_another_account_fails(keyring: Keyring) -> None:
    key_id, blob = keyring.encrypt(SECRET, account_id=uuid.uuid4(), field="refresh_token")
    with pytest.raises(DecryptionError, match="authentication failed"):
        keyring.decrypt(key_id, blob, account_id=uuid.uuid4(), field="refresh_token")


def test_ciphertext_moved_to_another_field_fails(keyring: Keyring) -> None:
    account_id = uuid.uuid4()
    key_id, blob = keyring.encrypt(SECRET, account_id=account_id, field="refresh_token")
    with pytest.raises(DecryptionError):
        keyring.decrypt(key_id, blob, account_id=account_id, field="access_token")


def test_ciphertext_relabelled_with_another_key_id_fails() -> None:
    # Same key material under two ids: the key id itself is authenticated, not just the key.
    key = generate_key()
    ring = Keyring("a", {"a": key, "b": key})
    account_id = uuid.uuid4()
    _, blob = ring.encrypt(SECRET, account_id=account_id, field="f")
    with pytest.raises(DecryptionError):
        ring.decrypt("b", blob, account_id=account_id, field="f")


@pytest.mark.parametrize("position", [0, NONCE_BYTES, -1])
def test_tampered_byte_fails(keyring: Keyring, position: int) -> None:
    account_id = uuid.uuid4()
    key_id, blob = keyring.encrypt(SECRET, account_id=account_id, field="f")
    tampered = bytearray(blob)
    tampered[position] ^= 0x01
    with pytest.raises(DecryptionError):
        keyring.decrypt(key_id, bytes(tampered), account_id=account_id, field="f")


def test_truncated_blob_fails(keyring: Keyring) -> None:
    with pytest.raises(DecryptionError, match="too short"):
        keyring.decrypt("k1", b"\x00" * 27, account_id=uuid.uuid4(), field="f")


def test_unknown_key_id_fails(keyring: Keyring) -> None:
    account_id = uuid.uuid4()
    other = Keyring("k9", {"k9": generate_key()})
    key_id, blob = other.encrypt(SECRET, account_id=account_id, field="f")
    with pytest.raises(DecryptionError, match="unknown key id 'k9'"):
        keyring.decrypt(key_id, blob, account_id=account_id, field="f")


def test_wrong_key_under_same_id_fails(keyring: Keyring) -> None:
    account_id = uuid.uuid4()
    impostor = Keyring("k1", {"k1": generate_key()})
    key_id, blob = impostor.encrypt(SECRET, account_id=account_id, field="f")
    with pytest.raises(DecryptionError) as info:
        keyring.decrypt(key_id, blob, account_id=account_id, field="f")
    assert SECRET not in str(info.value)


def test_nonces_differ_across_calls(keyring: Keyring) -> None:
    account_id = uuid.uuid4()
    blobs = [keyring.encrypt(SECRET, account_id=account_id, field="f")[1] for _ in range(50)]
    assert len({b[:NONCE_BYTES] for b in blobs}) == 50
    assert len(set(blobs)) == 50


def test_old_keys_still_decrypt() -> None:
    old, new = generate_key(), generate_key()
    account_id = uuid.uuid4()
    key_id, blob = Keyring("old", {"old": old}).encrypt(SECRET, account_id=account_id, field="f")
    rotated = Keyring("new", {"old": old, "new": new})
    assert rotated.decrypt(key_id, blob, account_id=account_id, field="f") == SECRET
    assert rotated.encrypt(SECRET, account_id=account_id, field="f")[0] == "new"


@pytest.mark.parametrize(
    ("active", "keys", "message"),
    [
        ("k1", {"k1": b"short"}, "must be 32 bytes"),
        ("k2", {"k1": bytes(32)}, "not in the keyring"),
        ("a|b", {"a|b": bytes(32)}, "invalid key id"),
        ("", {"": bytes(32)}, "invalid key id"),
    ],
)
def test_keyring_validation(active: str, keys: dict[str, bytes], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Keyring(active, keys)


def test_field_name_is_validated(keyring: Keyring) -> None:
    with pytest.raises(ValueError, match="invalid field"):
        keyring.encrypt(SECRET, account_id=uuid.uuid4(), field="a|b")


def test_repr_shows_key_ids_not_keys() -> None:
    key = generate_key()
    text = repr(Keyring("k1", {"k1": key}))
    assert text == "Keyring(active_key_id='k1', key_ids=['k1'])"
    assert key.hex() not in text
