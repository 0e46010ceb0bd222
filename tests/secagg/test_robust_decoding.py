"""Reed–Solomon decoding of Shamir shares and the commitments that catch cheaters."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import ReconstructionError, shamir
from secagg.robust import ShareKind, decode, seed_commitment, share_commitment

P = shamir.PRIME


def _shares(t: int, xs: list[int], secret: bytes) -> dict[int, int]:
    return shamir.split(secret, t, xs, os.urandom)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), secret=st.binary(min_size=32, max_size=32))
def test_decodes_around_up_to_half_the_redundancy(
    data: st.DataObject, secret: bytes
) -> None:
    t = data.draw(st.integers(1, 8))
    m = data.draw(st.integers(t, 24))
    xs = data.draw(
        st.lists(st.integers(1, 2**32 - 1), min_size=m, max_size=m, unique=True)
    )
    shares = _shares(t, xs, secret)
    bad = data.draw(st.lists(st.sampled_from(xs), unique=True, max_size=(m - t) // 2))
    for x in bad:
        shares[x] = (shares[x] + data.draw(st.integers(1, P - 1))) % P
    value, wrong = decode(shares, t)
    assert value.to_bytes(32, "little") == secret
    assert wrong == frozenset(bad)


def _oracle(shares: dict[int, int], t: int) -> set[int]:
    """Every secret of a degree < t polynomial within (m - t) // 2 of the shares
    (brute force over t-subsets: the slow reference)."""
    m, budget = len(shares), (len(shares) - t) // 2
    found = set()
    for subset in itertools.combinations(sorted(shares), t):
        lam = shamir.lagrange_at_zero(subset)
        f0 = sum(lam_i * shares[x] for lam_i, x in zip(lam, subset, strict=True)) % P
        # Agreement with every point, through the basis at each x.
        agree = 0
        for x in shares:
            coeffs = _lagrange_at(subset, x)
            y = sum(c * shares[s] for c, s in zip(coeffs, subset, strict=True)) % P
            agree += y == shares[x]
        if m - agree <= budget:
            found.add(f0)
    return found


def _lagrange_at(xs: tuple[int, ...], at: int) -> list[int]:
    out = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (at - xj) % P
                den = den * (xi - xj) % P
        out.append(num * pow(den, -1, P) % P)
    return out


def test_matches_a_brute_force_decoder_on_small_codes() -> None:
    rng = random.Random(20260101)  # test data only, never key material
    for _ in range(40):
        t = rng.randint(1, 4)
        m = rng.randint(t, 8)
        xs = rng.sample(range(1, 40), m)
        shares = _shares(t, xs, os.urandom(32))
        for x in rng.sample(xs, rng.randint(0, m - t)):
            shares[x] = rng.randrange(P)
        expected = _oracle(shares, t)
        if expected:
            value, _ = decode(shares, t)
            assert expected == {value}
        else:
            with pytest.raises(ReconstructionError, match="cannot decode"):
                decode(shares, t)


def test_too_many_wrong_shares_are_refused_not_guessed() -> None:
    xs = [1, 2, 3, 4, 5, 6]
    shares = _shares(3, xs, os.urandom(32))
    shares[1] = (shares[1] + 1) % P
    shares[4] = (shares[4] + 1) % P
    with pytest.raises(ReconstructionError, match="more than 1 of 6 shares are wrong"):
        decode(shares, 3)


def test_too_few_shares_and_out_of_range_secrets_raise() -> None:
    with pytest.raises(ReconstructionError, match="need at least 3 shares"):
        decode({1: 5, 2: 7}, 3)
    # The constant polynomial 2^256: a field element, but no 32-byte secret.
    with pytest.raises(ReconstructionError, match="decoded secret is out of range"):
        decode({1: 2**256, 2: 2**256, 3: 2**256}, 1)


def test_commitments_bind_kind_parties_session_and_value() -> None:
    session = bytes(range(32))
    base = share_commitment(ShareKind.SEED, 12345, session, 1, 2)
    variants = {
        share_commitment(ShareKind.MASK_KEY, 12345, session, 1, 2),
        share_commitment(ShareKind.SEED, 12346, session, 1, 2),
        share_commitment(ShareKind.SEED, 12345, bytes(32), 1, 2),
        share_commitment(ShareKind.SEED, 12345, session, 2, 1),
        share_commitment(ShareKind.SEED, 12345, session, 1, 3),
    }
    assert base not in variants and len(variants) == 5
    seed = bytes(32)
    assert seed_commitment(seed, session, 1) != seed_commitment(seed, session, 2)
    assert seed_commitment(seed, session, 1) != seed_commitment(seed, bytes(32), 1)
    # The encodings, spelt out with hashlib, and pinned: a change of format
    # is a change of protocol version.
    spelt = hashlib.sha256(
        b"fedshield/secagg/v1/share-commitment"
        + struct.pack("<BII", 2, 1, 2)
        + session
        + (12345).to_bytes(33, "little")
    ).digest()
    assert base == spelt
    assert base.hex() == (
        "90ff284cee272c3f17da77e78dd21a0bbcd32dc1d56f09852dedcda490cf0c06"
    )
    seed_spelt = hashlib.sha256(
        b"fedshield/secagg/v1/seed-commitment" + session + struct.pack("<I", 1) + seed
    ).digest()
    assert seed_commitment(seed, session, 1) == seed_spelt
    assert seed_spelt.hex() == (
        "b11f322acbc3953cfaca406c60c373275e763170e8571a4bee22aa509b359fa9"
    )
