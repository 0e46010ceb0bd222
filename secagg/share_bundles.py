"""A client's Shamir shares in transit: sealed with commitments, opened with checks.

:func:`seal` splits a client's mask key ``s_sk`` and self-mask seed ``b``
among its share holders and returns the ShareKeys message: per holder an
AEAD bundle and the commitments to the two shares inside it
(:mod:`secagg.robust`), which the tag also covers, plus the commitment to
``b``.  :func:`open_relay` is the holder's side: every bundle must
authenticate (a relay that altered a commitment fails here), name the right
parties, and hold exactly the shares its dealer committed to; otherwise the
holder refuses, naming the dealer, before it uses anything.
:func:`check_revealed` is the server's side in Unmasking: a revealed share
that differs from the committed one convicts its holder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from secagg import crypto, robust, shamir
from secagg.errors import CheatingError, InvalidMessage, InvalidShare
from secagg.messages import (
    COMMITMENT_BYTES,
    ShareKeys,
    SharePlaintext,
    ShareRelay,
    UnmaskResponse,
)
from secagg.robust import ShareKind

__all__ = ["Sealed", "check_revealed", "open_relay", "pair_commitment", "seal"]


@dataclass(frozen=True, slots=True)
class Sealed:
    """The ShareKeys message and the dealer's own shares (key, seed)."""

    message: bytes
    own_shares: tuple[int, int]


def pair_commitment(
    key_share: int, seed_share: int, session: bytes, dealer: int, holder: int
) -> bytes:
    """Commitment to the mask-key share ‖ commitment to the seed share."""
    return robust.share_commitment(
        ShareKind.MASK_KEY, key_share, session, dealer, holder
    ) + robust.share_commitment(ShareKind.SEED, seed_share, session, dealer, holder)


def seal(
    *,
    me: int,
    holders: list[int],
    threshold: int,
    mask_key: bytes,
    seed: bytes,
    session: bytes,
    channel_keys: Mapping[int, bytes],
    entropy: Callable[[int], bytes],
) -> Sealed:
    """Share ``mask_key`` and ``seed`` among ``holders`` (``me`` included)."""
    xs = shamir.points(holders)
    s_shares = shamir.split(mask_key, threshold, xs, entropy)
    b_shares = shamir.split(seed, threshold, xs, entropy)
    ciphertexts, commitments = [], []
    for v in holders:
        if v == me:
            continue
        key_share, seed_share = s_shares[v + 1], b_shares[v + 1]
        bound = pair_commitment(key_share, seed_share, session, me, v)
        plaintext = SharePlaintext(
            sender=me, receiver=v, key_share=key_share, seed_share=seed_share
        ).to_bytes()
        ct = crypto.encrypt_share(channel_keys[v], session, me, v, plaintext, bound)
        ciphertexts.append((v, ct))
        commitments.append((v, bound))
    message = ShareKeys(
        sender=me,
        seed_commitment=robust.seed_commitment(seed, session, me),
        ciphertexts=tuple(ciphertexts),
        commitments=tuple(commitments),
    ).to_bytes()
    return Sealed(message=message, own_shares=(s_shares[me + 1], b_shares[me + 1]))


def open_relay(
    relay: ShareRelay, me: int, session: bytes, channel_keys: Mapping[int, bytes]
) -> dict[int, tuple[int, int]]:
    """The (key share, seed share) each dealer in ``relay`` gave ``me``."""
    bound = dict(relay.commitments)
    held: dict[int, tuple[int, int]] = {}
    for v, ct in relay.ciphertexts:
        pt = crypto.decrypt_share(channel_keys[v], session, v, me, ct, bound[v])
        try:
            share = SharePlaintext.from_bytes(pt)
        except InvalidMessage as exc:
            raise InvalidShare(f"share from client {v} is malformed") from exc
        if (share.sender, share.receiver) != (v, me):
            raise InvalidShare(
                f"share relayed from client {v} names the wrong sender or receiver"
            )
        got = pair_commitment(share.key_share, share.seed_share, session, v, me)
        if got != bound[v]:
            raise InvalidShare(
                f"shares from client {v} do not match the commitments it published"
            )
        held[v] = (share.key_share, share.seed_share)
    return held


def check_revealed(
    response: UnmaskResponse,
    commitments: Mapping[int, Mapping[int, bytes]],
    session: bytes,
) -> None:
    """Every share ``response`` reveals must match the commitment its dealer
    published for that holder; :class:`CheatingError` names the holder.

    ``commitments`` maps dealer → holder → key ‖ seed commitment.  A
    holder's share of its own seed has no per-share commitment; the seed
    commitment checks it at reconstruction.
    """
    holder = response.sender
    wrong = []
    for entries, kind, half in (
        (response.seed_shares, ShareKind.SEED, slice(COMMITMENT_BYTES, None)),
        (response.key_shares, ShareKind.MASK_KEY, slice(0, COMMITMENT_BYTES)),
    ):
        for owner, share in entries:
            if owner == holder:
                continue
            expected = commitments.get(owner, {}).get(holder)
            got = robust.share_commitment(kind, share, session, owner, holder)
            if expected is None or got != expected[half]:
                wrong.append(owner)
    if wrong:
        raise CheatingError(
            f"client {holder} revealed shares of clients {sorted(set(wrong))} "
            "that do not match their dealers' commitments",
            frozenset({holder}),
        )
