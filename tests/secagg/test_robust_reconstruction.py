"""Malicious clients against an honest server: wrong shares, bad dealers, and
low-order or non-canonical keys.  The server names the cheater and, while
``threshold`` honest shares remain, still returns the exact sum."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

from secagg import (
    CheatingError,
    InvalidKey,
    Round,
    SecAggAggregate,
    SecAggConfig,
    SecAggServer,
    SecurityMode,
    TooFewSurvivors,
    crypto,
    identity,
    make_consortium,
    robust,
    shamir,
    share_bundles,
)
from secagg.messages import AdvertiseKeys, ShareKeys, SharePlaintext, UnmaskResponse
from secagg.pubkeys import FIELD_PRIME, LOW_ORDER_U
from secagg.signed_messages import SignedAdvertiseKeys
from tests.secagg.conftest import MODEL, Drive, config, drive, quantized

HARD = SecurityMode.HARDENED


def _expected(cfg: SecAggConfig, survivors: set[int]) -> tuple[np.ndarray, int]:
    """Σ w·x and Σ w of the inputs ``drive`` gives ``survivors``."""
    weights = {i: 1 + i % cfg.max_weight for i in survivors}
    x = {i: np.linspace(-0.5, 0.5, cfg.vector_length) + 0.01 * i for i in survivors}
    return sum(weights[i] * x[i] for i in survivors), sum(weights.values())  # type: ignore[return-value]


def _exact(agg: SecAggAggregate, cfg: SecAggConfig, survivors: set[int]) -> None:
    """The exact secure sum: the total weight exactly, Σ w·x to within the
    stochastic rounding of each input (half a step per unit of weight)."""
    weighted, weight = _expected(cfg, survivors)
    assert agg.total_weight == weight
    step = weight / cfg.scale
    assert np.allclose(agg.weighted_sum.numpy(), weighted, rtol=0, atol=step)


def _shift(share: int, by: int = 1) -> int:
    return (share + by) % shamir.PRIME


def _responses(run: Drive) -> dict[int, UnmaskResponse]:
    return {
        i: UnmaskResponse.from_bytes(run.clients[i].unmask(msg))
        for i, msg in run.requests.items()
    }


# Attack 6: one wrong share -------------------------------------------------


@pytest.mark.parametrize("mode", [SecurityMode.SEMI_HONEST, HARD])
def test_a_wrong_share_of_a_survivors_seed_is_caught_and_decoded_around(
    mode: SecurityMode,
) -> None:
    run = drive(config(n=5, t=4, d=4, mode=mode), Round.UNMASKING)
    responses = _responses(run)
    r2 = responses[2]
    seeds = tuple((v, _shift(y) if v == 0 else y) for v, y in r2.seed_shares)
    bad = UnmaskResponse(sender=2, seed_shares=seeds, key_shares=r2.key_shares)
    with pytest.raises(
        CheatingError, match=r"client 2 revealed shares of clients \[0\]"
    ):
        run.server.receive(2, bad.to_bytes())
    for i in (0, 1, 3, 4):
        run.server.receive(i, responses[i].to_bytes())
    agg = run.server.unmask()
    assert agg.cheaters == {2} and agg.responders == {0, 1, 3, 4}
    _exact(agg, run.cfg, set(range(5)))


def test_a_wrong_share_of_a_dropped_clients_key_is_caught_and_decoded_around() -> None:
    run = drive(config(n=5, t=3, d=4), Round.UNMASKING, absent={4: Round.MASKED_INPUT})
    responses = _responses(run)
    r1 = responses[1]
    keys = tuple((v, _shift(y, 2**100)) for v, y in r1.key_shares)
    bad = UnmaskResponse(sender=1, seed_shares=r1.seed_shares, key_shares=keys)
    with pytest.raises(
        CheatingError, match=r"client 1 revealed shares of clients \[4\]"
    ):
        run.server.receive(1, bad.to_bytes())
    for i in (0, 2, 3):
        run.server.receive(i, responses[i].to_bytes())
    agg = run.server.unmask()
    assert agg.cheaters == {1} and agg.dropped == {4}
    _exact(agg, run.cfg, {0, 1, 2, 3})


def test_contrast_without_commitments_one_wrong_share_ruins_the_sum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same offset share with every commitment check switched off: the
    # server rebuilds a wrong seed and returns noise without a word.
    monkeypatch.setattr(share_bundles, "check_revealed", lambda *a: None)
    monkeypatch.setattr(
        robust,
        "recover",
        lambda owner, shares, t, opens: (shamir.reconstruct(shares, t), False),
    )
    run = drive(config(n=5, t=4, d=4), Round.UNMASKING)
    responses = _responses(run)
    r1 = responses[1]  # point 2: among the four lowest, so it is used
    seeds = tuple((v, _shift(y) if v == 0 else y) for v, y in r1.seed_shares)
    responses[1] = UnmaskResponse(sender=1, seed_shares=seeds, key_shares=())
    for i, r in responses.items():
        run.server.receive(i, r.to_bytes())
    agg = run.server.unmask()
    _, weight = _expected(run.cfg, set(range(5)))
    assert agg.total_weight != weight and agg.cheaters == set()


def test_too_many_cheaters_abort_naming_them() -> None:
    run = drive(config(n=4, t=3, d=4), Round.UNMASKING)
    responses = _responses(run)
    for liar in (1, 2):
        r = responses[liar]
        seeds = tuple((v, _shift(y) if v == 0 else y) for v, y in r.seed_shares)
        bad = UnmaskResponse(sender=liar, seed_shares=seeds, key_shares=())
        with pytest.raises(CheatingError):
            run.server.receive(liar, bad.to_bytes())
    for i in (0, 3):
        run.server.receive(i, responses[i].to_bytes())
    with pytest.raises(
        TooFewSurvivors,
        match=r"only 2 clients answered the Unmasking request; threshold is 3 "
        r"\(cheaters set aside: \[1, 2\]\)",
    ):
        run.server.unmask()


# Malicious dealers -----------------------------------------------------------


def _tamper_dealer(
    run: Drive, dealer: int, edit: Callable[[ShareKeys, dict[int, bytes]], ShareKeys]
) -> dict[int, bytes]:
    """Play ShareKeys with ``dealer``'s message rewritten by ``edit`` (which
    gets the dealer's channel keys, as the dealer itself would)."""
    out = {i: run.clients[i].share_keys(msg) for i, msg in run.requests.items()}
    st = run.clients[dealer]._state
    out[dealer] = edit(
        ShareKeys.from_bytes(out[dealer]), dict(st.channel_keys)
    ).to_bytes()
    for i, msg in out.items():
        run.server.receive(i, msg)
    return run.server.broadcast()


def _finish(run: Drive, relays: dict[int, bytes]) -> SecAggAggregate:
    for i, msg in relays.items():
        run.server.receive(i, run.clients[i].masked_input(msg, quantized(run.cfg, i)))
    for i, msg in run.server.broadcast().items():
        run.server.receive(i, run.clients[i].unmask(msg))
    return run.server.unmask()


def test_a_dealer_with_one_off_polynomial_share_is_decoded_around() -> None:
    # Dealer 0 gives holder 1 a seed share off its polynomial, committed to
    # honestly, so the holder cannot tell; the server decodes around it.
    run = drive(config(n=5, t=3, d=4), Round.SHARE_KEYS)
    session_of = run.clients[0]

    def edit(msg: ShareKeys, channel: dict[int, bytes]) -> ShareKeys:
        session = session_of._state.session
        cts, bound = dict(msg.ciphertexts), dict(msg.commitments)
        pt = crypto.decrypt_share(channel[1], session, 0, 1, cts[1], bound[1])
        share = SharePlaintext.from_bytes(pt)
        bad = dataclasses.replace(
            share, seed_share=(share.seed_share + 1) % shamir.PRIME
        )
        bound[1] = share_bundles.pair_commitment(
            bad.key_share, bad.seed_share, session, 0, 1
        )
        cts[1] = crypto.encrypt_share(
            channel[1], session, 0, 1, bad.to_bytes(), bound[1]
        )
        return ShareKeys(
            sender=0,
            seed_commitment=msg.seed_commitment,
            ciphertexts=tuple(sorted(cts.items())),
            commitments=tuple(sorted(bound.items())),
        )

    agg = _finish(run, _tamper_dealer(run, 0, edit))
    assert agg.cheaters == {0}
    _exact(agg, run.cfg, set(range(5)))


def test_a_dealer_whose_shares_do_not_open_its_commitment_is_named() -> None:
    run = drive(config(n=4, t=3, d=4), Round.SHARE_KEYS)

    def edit(msg: ShareKeys, channel: dict[int, bytes]) -> ShareKeys:
        del channel
        lie = robust.seed_commitment(bytes(32), b"another session", 2)
        return ShareKeys(
            sender=2,
            seed_commitment=lie,
            ciphertexts=msg.ciphertexts,
            commitments=msg.commitments,
        )

    with pytest.raises(CheatingError, match="shares of client 2 do not open its") as e:
        _finish(run, _tamper_dealer(run, 2, edit))
    assert e.value.culprits == {2}


# Attacks 7 and 8: keys an honest server refuses ------------------------------


def _valid() -> bytes:
    return crypto.public_bytes(X25519PrivateKey.generate())


def test_pyca_refuses_exactly_the_listed_low_order_points() -> None:
    me = X25519PrivateKey.generate()
    for u in LOW_ORDER_U:
        with pytest.raises(ValueError):
            me.exchange(X25519PublicKey.from_public_bytes(u.to_bytes(32, "little")))
    for _ in range(64):
        me.exchange(X25519PublicKey.from_public_bytes(_valid()))


@pytest.mark.parametrize("u", sorted(LOW_ORDER_U))
@pytest.mark.parametrize("slot", ["c_pk", "s_pk"])
def test_the_server_refuses_a_low_order_key_naming_the_client(
    u: int, slot: str
) -> None:
    low = u.to_bytes(32, "little")
    keys = {"c_pk": _valid(), "s_pk": _valid()} | {slot: low}
    server = SecAggServer(config(n=4, t=3))
    with pytest.raises(InvalidKey, match=f"client 3 advertised a low-order {slot}"):
        server.receive(3, AdvertiseKeys(sender=3, **keys).to_bytes())
    assert server._adverts == {}
    # A hardened member signing the bad key itself changes nothing.
    cfg = config(n=4, t=3, mode=HARD)
    consortium, ids = make_consortium(range(4))
    signed = SecAggServer(cfg, consortium=consortium, model_hash=MODEL)
    payload = identity.advertise_payload(
        cfg.digest(), MODEL, 3, keys["c_pk"], keys["s_pk"]
    )
    advert = SignedAdvertiseKeys(
        sender=3, signature=identity.sign(ids[3], payload), **keys
    )
    with pytest.raises(InvalidKey, match=f"client 3 advertised a low-order {slot}"):
        signed.receive(3, advert.to_bytes())


def test_the_server_refuses_non_canonical_twins_of_a_key() -> None:
    server = SecAggServer(config(n=4, t=3))
    honest = AdvertiseKeys(sender=0, c_pk=_valid(), s_pk=_valid())
    server.receive(0, honest.to_bytes())
    top = bytes(honest.s_pk[:31]) + bytes([honest.s_pk[31] | 0x80])
    # X25519 ignores the top bit: the twin is the same key, other bytes.
    me = X25519PrivateKey.generate()
    assert me.exchange(X25519PublicKey.from_public_bytes(top)) == me.exchange(
        X25519PublicKey.from_public_bytes(honest.s_pk)
    )
    with pytest.raises(
        InvalidKey, match=r"client 1 advertised a non-canonical s_pk \(top bit set\)"
    ):
        server.receive(1, AdvertiseKeys(sender=1, c_pk=_valid(), s_pk=top).to_bytes())
    # u and u + p are one point; only u < p is accepted.
    small = 5
    wrapped = (small + FIELD_PRIME).to_bytes(32, "little")
    with pytest.raises(InvalidKey, match=r"non-canonical c_pk \(u >= 2\^255 - 19\)"):
        server.receive(
            2, AdvertiseKeys(sender=2, c_pk=wrapped, s_pk=_valid()).to_bytes()
        )
    assert set(server._adverts) == {0}
