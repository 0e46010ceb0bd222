"""The server's last step: rebuild the revealed secrets, list the masks to remove.

Kept apart from the round bookkeeping of :mod:`secagg.server`.  Each share
reaching here already matched its dealer's per-share commitment; each rebuilt
secret must open its own commitment as well (the seed hash, or ``s_pk``), or
it is decoded around inconsistent shares (:func:`secagg.robust.recover`) and
its dealer is convicted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass

from secagg import crypto, robust
from secagg.errors import TooFewSurvivors
from secagg.masking import MaskList, dropped_pair_masks, self_masks
from secagg.messages import UnmaskResponse

__all__ = ["Unmasking", "mask_removal"]


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
                index.setdefault(owner, {})[responder + 1] = y
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


def mask_removal(u: Unmasking) -> tuple[MaskList, frozenset[int]]:
    """The survivors' self masks, then each dropped client's pairwise masks
    with its surviving neighbours, as one (keys, signs) list; and the dealers
    convicted on the way."""
    seed_index, key_index = _index(u.responses)
    convicted: set[int] = set()
    seeds = {}
    for owner in sorted(u.survivors):
        want = u.seed_commitments[owner]

        def opens_seed(seed: bytes, owner: int = owner, want: bytes = want) -> bool:
            return robust.seed_commitment(seed, u.session, owner) == want

        seeds[owner], cheated = _secret(u, owner, seed_index.get(owner, {}), opens_seed)
        convicted |= {owner} if cheated else set()
    keys, signs = self_masks(seeds, u.session)
    for v in sorted(u.dropped):
        s_pk = u.s_pks[v]

        def opens_key(raw: bytes, s_pk: bytes = s_pk) -> bool:
            return crypto.public_bytes(crypto.private_from_bytes(raw)) == s_pk

        raw, cheated = _secret(u, v, key_index.get(v, {}), opens_key)
        convicted |= {v} if cheated else set()
        peers = {w: u.s_pks[w] for w in set(u.survivors) & u.neighbours[v]}
        more = dropped_pair_masks(v, crypto.private_from_bytes(raw), peers, u.session)
        keys += more[0]
        signs += more[1]
    return (keys, signs), frozenset(convicted)
