"""Which masks a client adds and which the server removes.

A client ``u`` adds its self mask ``+PRG(b_u)`` and, for every neighbour ``v``
that shared keys with it, the pairwise mask ``mask_sign(u, v) · PRG(s_uv)``;
the pairwise masks of two survivors cancel in the sum.  The server removes
each survivor's self mask (from its reconstructed seed) and, for each dropped
client ``v``, the pairwise masks ``v`` shared with its surviving neighbours
(from ``v``'s reconstructed key).  Both sides build their (key, sign) lists
here, so the signs cannot drift apart.

>>> mask_sign(1, 2), mask_sign(2, 1)
(1, -1)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg import crypto

__all__ = ["MaskList", "client_masks", "dropped_pair_masks", "mask_sign", "self_masks"]

#: Mask keys and their signs, in the order a ring adds them.
MaskList = tuple[list[bytes], list[int]]


def mask_sign(me: int, peer: int) -> int:
    """Sign of the pairwise mask ``me`` adds for ``peer`` (they cancel in pairs)."""
    return 1 if me < peer else -1


def client_masks(
    me: int,
    seed: bytes,
    session: bytes,
    pair_keys: Mapping[int, bytes],
    peers: Iterable[int],
) -> MaskList:
    """What client ``me`` adds: its self mask, then one pairwise mask for each
    of ``peers`` (the neighbours that shared keys with it)."""
    keys, signs = [crypto.self_mask_key(seed, session, me)], [1]
    for v in peers:
        keys.append(pair_keys[v])
        signs.append(mask_sign(me, v))
    return keys, signs


def self_masks(seeds: Mapping[int, bytes], session: bytes) -> MaskList:
    """What the server subtracts for the survivors' self masks, by id."""
    keys = [crypto.self_mask_key(seeds[u], session, u) for u in sorted(seeds)]
    return keys, [-1] * len(keys)


def dropped_pair_masks(
    dropped: int,
    s_sk: X25519PrivateKey,
    neighbours: Mapping[int, bytes],
    session: bytes,
) -> MaskList:
    """What the server subtracts for the pairwise masks the surviving
    ``neighbours`` (id → their advertised ``s_pk``) added for ``dropped``,
    given ``dropped``'s reconstructed mask key ``s_sk``."""
    keys: list[bytes] = []
    signs: list[int] = []
    for u in sorted(neighbours):
        shared = crypto.agree(s_sk, neighbours[u])
        keys.append(crypto.pair_mask_key(shared, session, u, dropped))
        # u added mask_sign(u, dropped) · PRG; take it away.
        signs.append(-mask_sign(u, dropped))
    return keys, signs
