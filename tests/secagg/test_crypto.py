"""Key derivation labels, session binding, share encryption."""

from __future__ import annotations

import itertools
import os

import pytest

from secagg import InvalidKey, InvalidShare, crypto


def test_labels_are_distinct_versioned_and_prefix_free() -> None:
    labels = [label.value for label in crypto.Label]
    assert len(set(labels)) == len(labels)
    for a, b in itertools.permutations(labels, 2):
        assert not b.startswith(a + b"\x00")
    assert all(v.startswith(b"fedshield/secagg/v1/") for v in labels)


def test_each_label_derives_a_different_key() -> None:
    ikm, salt, ctx = os.urandom(32), os.urandom(32), b"ctx"
    keys = {crypto.derive(label, ikm, salt, ctx) for label in crypto.Label}
    assert len(keys) == len(crypto.Label)


def test_key_uses_do_not_collide() -> None:
    shared, session = os.urandom(32), os.urandom(32)
    derived = {
        crypto.channel_key(shared, session, 1, 2),
        crypto.pair_mask_key(shared, session, 1, 2),
        crypto.self_mask_key(shared, session, 1),
        crypto.self_mask_key(shared, session, 2),
        crypto.pair_mask_key(shared, os.urandom(32), 1, 2),
        crypto.pair_mask_key(shared, session, 1, 3),
    }
    assert len(derived) == 6


def test_pair_keys_agree_at_both_ends() -> None:
    a, b = (
        crypto.generate_private_key(os.urandom),
        crypto.generate_private_key(os.urandom),
    )
    session = os.urandom(32)
    ab = crypto.agree(a, crypto.public_bytes(b))
    ba = crypto.agree(b, crypto.public_bytes(a))
    assert crypto.pair_mask_key(ab, session, 3, 9) == crypto.pair_mask_key(
        ba, session, 9, 3
    )


def test_low_order_public_key_is_refused() -> None:
    key = crypto.generate_private_key(os.urandom)
    with pytest.raises(InvalidKey, match=r"peer public key is invalid \(low order\)"):
        crypto.agree(key, bytes(32))


def test_session_id_binds_config_and_every_key() -> None:
    keys = [(0, b"a" * 32, b"b" * 32), (1, b"c" * 32, b"d" * 32)]
    base = crypto.session_id(b"cfg", keys)
    assert crypto.session_id(b"cfg", list(reversed(keys))) == base
    assert crypto.session_id(b"cfg2", keys) != base
    assert crypto.session_id(b"cfg", [keys[0], (1, b"c" * 32, b"e" * 32)]) != base


def test_share_aead_binds_session_sender_and_receiver() -> None:
    key, session = os.urandom(32), os.urandom(32)
    ct = crypto.encrypt_share(key, session, 1, 2, b"payload")
    assert crypto.decrypt_share(key, session, 1, 2, ct) == b"payload"
    for args in ((os.urandom(32), 1, 2), (session, 2, 1), (session, 1, 3)):
        with pytest.raises(InvalidShare, match="failed to authenticate"):
            crypto.decrypt_share(key, args[0], args[1], args[2], ct)
    tampered = bytes([ct[0] ^ 1]) + ct[1:]
    with pytest.raises(InvalidShare, match="share from client 1 to client 2"):
        crypto.decrypt_share(key, session, 1, 2, tampered)
