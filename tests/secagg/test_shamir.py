"""Shamir t-of-n over GF(2^256 + 297)."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import InvalidInput, InvalidMessage, ReconstructionError, shamir
from secagg.messages import SharePlaintext


def test_prime_is_the_first_prime_above_2_256() -> None:
    assert sympy.isprime(shamir.PRIME)
    assert sympy.nextprime(2**256) == shamir.PRIME
    assert shamir.PRIME > 2**256  # every 32-byte secret is one element


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 12),
    data=st.data(),
    secret=st.binary(min_size=32, max_size=32),
)
def test_any_t_shares_reconstruct(n: int, data: st.DataObject, secret: bytes) -> None:
    t = data.draw(st.integers(1, n))
    ids = data.draw(
        st.lists(st.integers(0, 2**32 - 2), min_size=n, max_size=n, unique=True)
    )
    shares = shamir.split(secret, t, shamir.points(ids), os.urandom)
    subset = data.draw(st.permutations(sorted(shares)))[:t]
    assert shamir.reconstruct({x: shares[x] for x in subset}, t) == secret


def test_every_t_subset_reconstructs_small() -> None:
    secret = os.urandom(32)
    shares = shamir.split(secret, 3, [1, 2, 3, 4, 5], os.urandom)
    for subset in itertools.combinations(shares, 3):
        assert shamir.reconstruct({x: shares[x] for x in subset}, 3) == secret


def test_t_minus_one_shares_fail() -> None:
    secret = os.urandom(32)
    shares = shamir.split(secret, 4, [1, 2, 3, 4, 5, 6], os.urandom)
    few = {x: shares[x] for x in (2, 4, 6)}
    with pytest.raises(
        ReconstructionError, match="need 4 shares to reconstruct, got 3"
    ):
        shamir.reconstruct(few, 4)
    # Interpolating t-1 shares as if the threshold were t-1 gives a wrong value
    # (or one outside the secret range).
    with contextlib.suppress(ReconstructionError):
        assert shamir.reconstruct(few, 3) != secret


def test_lagrange_coefficients_are_cached() -> None:
    shamir.lagrange_at_zero.cache_clear()
    for _ in range(5):
        secret = os.urandom(32)
        shares = shamir.split(secret, 3, [7, 8, 9, 10], os.urandom)
        assert shamir.reconstruct(shares, 3) == secret
    info = shamir.lagrange_at_zero.cache_info()
    assert (info.misses, info.hits) == (1, 4)


def test_share_encoding_rejects_non_field_elements() -> None:
    top = SharePlaintext(sender=0, receiver=1, key_share=shamir.PRIME - 1, seed_share=0)
    assert SharePlaintext.from_bytes(top.to_bytes()) == top
    over = top.to_bytes()[:8] + shamir.PRIME.to_bytes(33, "little") + bytes(33)
    with pytest.raises(InvalidMessage, match=r"^share is not a field element$"):
        SharePlaintext.from_bytes(over)
    with pytest.raises(InvalidMessage, match=r"^share is not a field element$"):
        SharePlaintext(sender=0, receiver=1, key_share=-1, seed_share=0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: shamir.split(bytes(32), 3, [1, 2], os.urandom),
            "threshold must be in",
        ),
        (
            lambda: shamir.split(bytes(32), 1, [0, 1], os.urandom),
            "distinct and non-zero",
        ),
        (
            lambda: shamir.split(bytes(31), 1, [1], os.urandom),
            "secret must be 32 bytes",
        ),
        (lambda: shamir.lagrange_at_zero((1, 1)), "distinct and non-zero"),
    ],
)
def test_split_validates_arguments(call: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        call()
