"""Shamir t-of-n secret sharing of 32-byte secrets over GF(p), p = 2^256 + 297.

``p`` is the smallest prime above 2^256 (checked with sympy in the tests), so
every 32-byte secret is exactly one field element and no secret is ever
reduced.  Shares are evaluated at ``x = party id + 1`` (never 0).  Lagrange
coefficients at 0 are cached per set of share holders, so a server that
reconstructs hundreds of secrets from the same survivors inverts once.

>>> import os
>>> shares = split(bytes(range(32)), 2, [1, 2, 3], os.urandom)
>>> reconstruct({x: shares[x] for x in (1, 3)}, 2) == bytes(range(32))
True
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence

from secagg.errors import InvalidInput, ReconstructionError

__all__ = [
    "PRIME",
    "SECRET_BYTES",
    "SHARE_BYTES",
    "lagrange_at_zero",
    "points",
    "reconstruct",
    "split",
]

PRIME = (1 << 256) + 297
SECRET_BYTES = 32
#: Bytes that hold any field element (p needs 257 bits).
SHARE_BYTES = 33
# Reduce the Horner accumulator only every 16 steps: x < 2^33, so it grows by
# at most 528 bits in between, and a big-int multiply by a small x is far
# cheaper than the reductions it saves (about 2x faster overall).
_LAZY_STEPS = 16


def _random_element(entropy: Callable[[int], bytes]) -> int:
    # Rejection sampling keeps the coefficient exactly uniform on [0, p).
    while True:
        value = int.from_bytes(entropy(SHARE_BYTES), "little") & ((1 << 257) - 1)
        if value < PRIME:
            return value


def split(
    secret: bytes,
    threshold: int,
    xs: Sequence[int],
    entropy: Callable[[int], bytes],
) -> dict[int, int]:
    """Shares of ``secret`` at each ``x`` in ``xs``; any ``threshold`` recover it."""
    if len(secret) != SECRET_BYTES:
        raise InvalidInput(f"secret must be 32 bytes, got {len(secret)}")
    if not 1 <= threshold <= len(xs):
        raise InvalidInput(f"threshold must be in [1, {len(xs)}], got {threshold}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise InvalidInput("share points must be distinct and non-zero")
    # coeffs[0] is the highest-degree coefficient, for Horner's rule.
    coeffs = [_random_element(entropy) for _ in range(threshold - 1)]
    coeffs.append(int.from_bytes(secret, "little"))
    shares: dict[int, int] = {}
    chunks = [coeffs[i : i + _LAZY_STEPS] for i in range(0, len(coeffs), _LAZY_STEPS)]
    for x in xs:
        acc = 0
        for chunk in chunks:
            for c in chunk:
                acc = acc * x + c
            acc %= PRIME
        shares[x] = acc
    return shares


@functools.lru_cache(maxsize=64)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Coefficients λ_i with f(0) = Σ λ_i f(x_i) for any polynomial of degree
    below ``len(xs)``; cached per holder set."""
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise InvalidInput("share points must be distinct and non-zero")
    lambdas = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        lambdas.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(lambdas)


def reconstruct(shares: Mapping[int, int], threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares ``{x: y}``.

    The ``threshold`` smallest points are used, so callers that pass the same
    holders for many secrets hit the coefficient cache.
    """
    if len(shares) < threshold:
        raise ReconstructionError(
            f"need {threshold} shares to reconstruct, got {len(shares)}"
        )
    xs = tuple(sorted(shares)[:threshold])
    lambdas = lagrange_at_zero(xs)
    value = sum(lam * shares[x] for lam, x in zip(lambdas, xs, strict=True)) % PRIME
    if value >= 1 << (8 * SECRET_BYTES):
        raise ReconstructionError("shares are inconsistent: secret out of range")
    return value.to_bytes(SECRET_BYTES, "little")


def points(ids: Iterable[int]) -> list[int]:
    """Share points for party ids: ``id + 1`` (0 is the secret's point)."""
    return [i + 1 for i in ids]
