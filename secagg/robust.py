"""Commitments to secrets and shares, and reconstruction that survives cheaters.

A malicious client can attack the sum through the shares it holds of other
clients' secrets: an offset on one share of an honest survivor's self-mask
seed silently turns the sum into noise.  Three layers stop it:

1. **Per-share commitments.**  A dealer publishes, with its encrypted shares,
   ``SHA-256(label ‖ kind ‖ session ‖ dealer ‖ holder ‖ share)`` for both
   shares it gives each holder; the holder checks its decrypted shares
   against them before it uses anything.  The server checks every share
   revealed in Unmasking against the same commitment, so a holder that
   reveals another value is caught on arrival, named, and its answer set
   aside; any ``threshold`` verified shares then rebuild the secret.
2. **Secret commitments.**  The self-mask seed is committed as
   ``SHA-256(label ‖ session ‖ owner ‖ seed)`` in ShareKeys; the mask key is
   committed by the advertised ``s_pk``.  The server checks each rebuilt
   secret against its commitment.
3. **Reed–Solomon decoding.**  If a rebuilt secret fails its commitment, the
   verified shares themselves are inconsistent: the dealer dealt shares off
   one polynomial.  :func:`decode` (Gao's algorithm over the Shamir field)
   finds the polynomial that agrees with all but at most ``(m - t) / 2`` of
   the ``m`` shares and names the points off it; the dealer is the cheater.

The hashes hide the shares: each share has 256 bits of entropy even given
``threshold - 1`` others.

>>> import os
>>> from secagg import shamir
>>> shares = shamir.split(bytes(32), 2, [1, 2, 3, 4], os.urandom)
>>> shares[3] = (shares[3] + 1) % shamir.PRIME
>>> secret, wrong = decode(shares, 2)
>>> secret == 0, sorted(wrong)
(True, [3])
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Callable, Mapping

from secagg.crypto import Label
from secagg.errors import CheatingError, ReconstructionError
from secagg.shamir import PRIME, SECRET_BYTES, SHARE_BYTES, reconstruct

__all__ = [
    "COMMITMENT_BYTES",
    "ShareKind",
    "decode",
    "recover",
    "seed_commitment",
    "share_commitment",
]

COMMITMENT_BYTES = 32


class ShareKind(enum.IntEnum):
    """Which secret a share belongs to (bound into its commitment)."""

    MASK_KEY = 1  # share of s_sk, revealed when its owner dropped
    SEED = 2  # share of the self-mask seed b, revealed when its owner survived


def seed_commitment(seed: bytes, session: bytes, owner: int) -> bytes:
    """Commitment to ``owner``'s self-mask seed in this session."""
    return hashlib.sha256(
        Label.SEED_COMMITMENT.value + session + struct.pack("<I", owner) + seed
    ).digest()


def share_commitment(
    kind: ShareKind, share: int, session: bytes, dealer: int, holder: int
) -> bytes:
    """Commitment to the ``kind`` share ``dealer`` gave ``holder``."""
    return hashlib.sha256(
        Label.SHARE_COMMITMENT.value
        + struct.pack("<BII", kind, dealer, holder)
        + session
        + share.to_bytes(SHARE_BYTES, "little")
    ).digest()


# Polynomials are coefficient lists, lowest degree first, over GF(PRIME).


def _trim(p: list[int]) -> list[int]:
    while p and p[-1] == 0:
        p.pop()
    return p


def _sub(a: list[int], b: list[int]) -> list[int]:
    out = [0] * max(len(a), len(b))
    for i, c in enumerate(a):
        out[i] = c
    for i, c in enumerate(b):
        out[i] = (out[i] - c) % PRIME
    return _trim(out)


def _mul(a: list[int], b: list[int]) -> list[int]:
    if not a or not b:
        return []
    out = [0] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        if x:
            for j, y in enumerate(b):
                out[i + j] += x * y
    return _trim([c % PRIME for c in out])


def _divmod(a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
    rem = list(a)
    inv = pow(b[-1], -1, PRIME)
    quot = [0] * max(len(a) - len(b) + 1, 0)
    for shift in range(len(a) - len(b), -1, -1):
        coef = rem[shift + len(b) - 1] * inv % PRIME
        quot[shift] = coef
        if coef:
            for j, c in enumerate(b):
                rem[shift + j] = (rem[shift + j] - coef * c) % PRIME
    return _trim(quot), _trim(rem[: len(b) - 1])


def _evaluate(p: list[int], x: int) -> int:
    acc = 0
    for c in reversed(p):
        acc = (acc * x + c) % PRIME
    return acc


def _times_linear(p: list[int], root: int) -> list[int]:
    """p · (X - root), in O(len(p))."""
    out = [0] * (len(p) + 1)
    for i, c in enumerate(p):
        out[i + 1] = (out[i + 1] + c) % PRIME
        out[i] = (out[i] - c * root) % PRIME
    return _trim(out)


def _interpolate(xs: list[int], ys: list[int]) -> list[int]:
    """The polynomial of degree < len(xs) through the points (Newton form)."""
    coef = list(ys)
    m = len(xs)
    for j in range(1, m):
        for i in range(m - 1, j - 1, -1):
            den = pow((xs[i] - xs[i - j]) % PRIME, -1, PRIME)
            coef[i] = (coef[i] - coef[i - 1]) * den % PRIME
    # Horner on the Newton basis: c0 + (X - x0)(c1 + (X - x1)(c2 + ...)).
    poly = [coef[-1]]
    for i in range(m - 2, -1, -1):
        poly = _times_linear(poly, xs[i])
        if poly:
            poly[0] = (poly[0] + coef[i]) % PRIME
        else:
            poly = [coef[i]]
        poly = _trim(poly)
    return _trim(poly)


def decode(shares: Mapping[int, int], threshold: int) -> tuple[int, frozenset[int]]:
    """Secret and wrong points of shares ``{x: y}`` of a degree < ``threshold``
    polynomial, up to ``(len(shares) - threshold) // 2`` of them wrong.

    Gao's decoder for Reed–Solomon codes: interpolate through every share,
    run the extended Euclidean algorithm against ``Π (X - x)`` until the
    remainder's degree drops below ``(m + threshold) / 2``, and divide.
    Raises :class:`ReconstructionError` when more shares are wrong than that.
    """
    m = len(shares)
    if not 1 <= threshold <= m:
        raise ReconstructionError(
            f"need at least {threshold} shares to decode, got {m}"
        )
    xs = sorted(shares)
    ys = [shares[x] % PRIME for x in xs]
    g0 = [1]
    for x in xs:
        g0 = _times_linear(g0, x)
    r_prev, r = g0, _interpolate(xs, ys)
    v_prev: list[int] = []
    v = [1]
    while r and 2 * (len(r) - 1) >= m + threshold:
        q, rem = _divmod(r_prev, r)
        r_prev, r = r, rem
        v_prev, v = v, _sub(v_prev, _mul(q, v))
    if not r:
        # Every share lies on a polynomial of degree < threshold already.
        f: list[int] = []
    else:
        f, rest = _divmod(r, v)
        if rest or len(f) > threshold:
            raise ReconstructionError(
                f"more than {(m - threshold) // 2} of {m} shares are wrong: "
                "cannot decode"
            )
    wrong = frozenset(x for x, y in zip(xs, ys, strict=True) if _evaluate(f, x) != y)
    if 2 * len(wrong) > m - threshold:
        raise ReconstructionError(
            f"more than {(m - threshold) // 2} of {m} shares are wrong: cannot decode"
        )
    secret = f[0] if f else 0
    if secret >= 1 << (8 * SECRET_BYTES):
        raise ReconstructionError("decoded secret is out of range")
    return secret, wrong


def recover(
    owner: int,
    shares: Mapping[int, int],
    threshold: int,
    opens: Callable[[bytes], bool],
) -> tuple[bytes, bool]:
    """``owner``'s secret from verified shares, checked by ``opens`` against
    its commitment; ``(secret, dealer_cheated)``.

    The ``threshold`` lowest shares are tried first (one cached Lagrange
    combination).  If the result fails its commitment the shares are off one
    polynomial: :func:`decode` finds the codeword, and ``dealer_cheated`` is
    true, since every share was already checked against its dealer's
    per-share commitment.  :class:`CheatingError` names ``owner`` when even
    that does not open the commitment.
    """
    try:
        first = reconstruct(shares, threshold)
    except ReconstructionError:  # the lowest shares give no 32-byte secret
        first = None
    if first is not None and opens(first):
        return first, False
    try:
        value, _ = decode(shares, threshold)
    except ReconstructionError as exc:
        raise CheatingError(
            f"client {owner} dealt shares that do not decode: {exc}",
            frozenset({owner}),
        ) from None
    secret = value.to_bytes(SECRET_BYTES, "little")
    if not opens(secret):
        raise CheatingError(
            f"the shares of client {owner} do not open its commitment",
            frozenset({owner}),
        )
    return secret, True
