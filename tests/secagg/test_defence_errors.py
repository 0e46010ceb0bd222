"""One negative test per error path the hardened defences add: type and message."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from secagg import (
    CheatingError,
    ClientPolicy,
    ConfigError,
    GraphKind,
    Identities,
    InvalidMessage,
    InvalidShare,
    MemoryParticipationLog,
    PolicyViolation,
    Round,
    SecAggClient,
    SecAggConfig,
    SecurityMode,
    crypto,
    make_consortium,
    robust,
    run_session,
    shamir,
    share_bundles,
)
from secagg.messages import ShareKeys, ShareRelay
from tests.secagg.conftest import LENIENT, MODEL, config, drive, quantized, refuses

HARD = SecurityMode.HARDENED


def _hardened(cfg: SecAggConfig, roster: int, policy: ClientPolicy) -> None:
    consortium, keys = make_consortium(range(roster))
    SecAggClient(
        cfg,
        0,
        policy=policy,
        consortium=consortium,
        identity=keys[0],
        model_hash=MODEL,
        participation=MemoryParticipationLog(),
    )


def test_session_nonce_must_be_32_bytes() -> None:
    with pytest.raises(ConfigError, match="session_nonce must be 32 bytes"):
        config(session_nonce=b"short")


@pytest.mark.parametrize(
    ("cfg", "roster", "policy", "message"),
    [
        (
            config(n=8, t=7, mode=HARD),
            6,
            LENIENT,
            "cohort of 8 exceeds the consortium roster of 6",
        ),
        (
            # k = C = 4: two windows of k/2 colluders would cut the ring.
            config(n=12, t=5, mode=HARD, graph=GraphKind.HARARY, degree=4),
            12,
            dataclasses.replace(LENIENT, assumed_corrupt_fraction=0.3, min_honest=1),
            r"degree 4 cannot keep honest survivors connected against 4 assumed "
            r"colluders \(needs degree > 4\)",
        ),
        (
            # 2·9 > 12 + 5, but t - C = 4 < min_honest = 5.
            config(n=12, t=9, mode=HARD),
            12,
            dataclasses.replace(LENIENT, assumed_corrupt_fraction=0.4, min_honest=5),
            "threshold 9 is below this client's minimum of 10",
        ),
    ],
)
def test_hardened_policy_refusals(
    cfg: SecAggConfig, roster: int, policy: ClientPolicy, message: str
) -> None:
    with pytest.raises(PolicyViolation, match=message):
        _hardened(cfg, roster, policy)


def test_identities_must_give_every_client_a_log() -> None:
    consortium, keys = make_consortium(range(4))
    ident = Identities(
        consortium=consortium,
        keys=keys,
        model_hash=MODEL,
        participation={i: MemoryParticipationLog() for i in range(3)},
    )
    with pytest.raises(ConfigError, match=r"has no log for clients \[3\]"):
        run_session([torch.zeros(2)] * 4, [1] * 4, config(n=4, t=3, d=2, mode=HARD),
                    identities=ident)  # fmt: skip


def test_share_commitments_must_name_the_ciphertexts_parties() -> None:
    with pytest.raises(InvalidMessage, match="must name the ciphertexts' parties"):
        ShareRelay(receiver=0, ciphertexts=(), commitments=((1, bytes(64)),))
    with pytest.raises(InvalidMessage, match="seed_commitment must be 32 bytes"):
        ShareKeys(sender=0, seed_commitment=b"", ciphertexts=(), commitments=())


def test_a_holder_refuses_shares_off_their_commitments() -> None:
    # Dealer 1 commits (and binds into the AEAD tag) to other shares than it
    # encrypts: the holder names it before using anything.
    run = drive(config(n=4, t=3), Round.MASKED_INPUT)
    dealer = run.clients[1]._state
    session, key = dealer.session, dealer.channel_keys[0]
    plaintext = (1).to_bytes(4, "little") + (0).to_bytes(4, "little") + bytes(66)
    bound = share_bundles.pair_commitment(1, 2, session, 1, 0)
    ct = crypto.encrypt_share(key, session, 1, 0, plaintext, bound)
    relay = ShareRelay.from_bytes(run.requests[0])
    forged = ShareRelay(
        receiver=0,
        ciphertexts=tuple((v, ct if v == 1 else c) for v, c in relay.ciphertexts),
        commitments=tuple((v, bound if v == 1 else c) for v, c in relay.commitments),
    ).to_bytes()
    client = run.clients[0]
    refuses(
        client,
        lambda: client.masked_input(forged, quantized(run.cfg)),
        InvalidShare,
        "shares from client 1 do not match the commitments it published",
    )


def test_recover_names_a_dealer_whose_shares_do_not_decode() -> None:
    shares = shamir.split(os.urandom(32), 3, [1, 2, 3, 4], os.urandom)
    shares[1] = (shares[1] + 1) % shamir.PRIME
    shares[2] = (shares[2] + 1) % shamir.PRIME
    with pytest.raises(CheatingError, match="client 7 dealt shares that do not decode"):
        robust.recover(7, shares, 3, lambda secret: False)
