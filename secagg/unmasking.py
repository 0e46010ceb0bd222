"""The server's last step: rebuild the revealed secrets and list the masks to remove.

Kept apart from the round bookkeeping of :mod:`secagg.server`.  Each share
reaching here already matched its dealer's per-share commitment; each rebuilt
secret must open its own commitment as well (the seed hash, or ``s_pk``), or
it is decoded around inconsistent shares (:func:`secagg.robust.recover`) and
its dealer is convicted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass

from secagg import crypto, robust, shamir
from secagg.client import mask_sign
from secagg.device_ring import MaskGroup
from secagg.errors import TooFewSurvivors
from secagg.messages import UnmaskResponse

__all__ = ["Unmasking", "mask_groups"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Unmasking:
    """What the server knows when it closes Unmasking."""

    threshold: int
    session: bytes
    survivors: Set[int]
    dropped: Set[int]
    neighbours: Mapping[int, frozenset[int]]
    s_pks: Mapping[int, bytes]
    seed_commitments: Mapping[int, bytes]
    responses: Mapping[int, UnmaskResponse]
    cheaters: Set[int]  # convicted so far (named in a too-few-shares error)


_Index = dict[int, dict[int, int]]


def _index(responses: Mapping[int, UnmaskResponse]) -> tuple[_Index, _Index]:
    # owner -> {share point: value}, for seeds and for mask keys.
    seeds: _Index = {}
    keys: _Index = {}
    for responder, msg in responses.items():
        for index, entries in ((seeds, msg.seed_shares), (keys, msg.key_shares)):
            for owner, y in entries:
                index.setdefault(owner, {})[responder + 1] = shamir.decode_share(y)
    return seeds, keys


def _secret(
    u: Unmasking, owner: int, shares: Mapping[int, int], opens: Callable[[bytes], bool]
) -> tuple[bytes, bool]:
    if len(shares) < u.threshold:
        aside = f" (cheaters set aside: {sorted(u.cheaters)})" if u.cheaters else ""
        raise TooFewSurvivors(
            f"only {len(shares)} shares for client {owner}; threshold is "
            f"{u.threshold}{aside}"
        )
    return robust.recover(owner, shares, u.threshold, opens)


def mask_groups(u: Unmasking) -> tuple[list[MaskGroup], frozenset[int]]:
    """Masks to take off the ring sum, and the dealers convicted on the way.

    One group for the survivors' self masks, then one per dropped client (its
    pairwise masks with all its surviving neighbours).
    """
    seed_index, key_index = _index(u.responses)
    convicted: set[int] = set()
    keys: list[bytes] = []
    for owner in sorted(u.survivors):
        want = u.seed_commitments[owner]

        def opens_seed(seed: bytes, owner: int = owner, want: bytes = want) -> bool:
            return robust.seed_commitment(seed, u.session, owner) == want

        seed, cheated = _secret(u, owner, seed_index.get(owner, {}), opens_seed)
        convicted |= {owner} if cheated else set()
        keys.append(crypto.self_mask_key(seed, u.session, owner))
    groups: list[MaskGroup] = [(keys, [-1] * len(keys))]
    for v in sorted(u.dropped):
        s_pk = u.s_pks[v]

        def opens_key(raw: bytes, s_pk: bytes = s_pk) -> bool:
            return crypto.public_bytes(crypto.private_from_bytes(raw)) == s_pk

        raw, cheated = _secret(u, v, key_index.get(v, {}), opens_key)
        convicted |= {v} if cheated else set()
        s_sk = crypto.private_from_bytes(raw)
        pair_keys, signs = [], []
        for w in sorted(set(u.survivors) & u.neighbours[v]):
            shared = crypto.agree(s_sk, u.s_pks[w])
            pair_keys.append(crypto.pair_mask_key(shared, u.session, w, v))
            # w added mask_sign(w, v) · PRG; take it away.
            signs.append(-mask_sign(w, v))
        groups.append((pair_keys, signs))
    return groups, frozenset(convicted)
