"""Hardened mode as an honest run: exact sums, drops at every round including
ConsistencyCheck, credentials and policy checks, and the honest server's own
refusals.  The malicious-server attacks live in ``test_attacks.py``."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch

from secagg import (
    ClientPhase,
    ClientPolicy,
    ConfigError,
    Consortium,
    Identities,
    InvalidSignature,
    MemoryParticipationLog,
    PolicyViolation,
    ProtocolError,
    Round,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    SecurityMode,
    TooFewSurvivors,
    UnknownIdentity,
    identity,
    make_consortium,
    run_session,
)
from secagg.messages import UnmaskResponse
from secagg.signed_messages import (
    ConsistencySignature,
    SignedAdvertiseKeys,
    SignedUnmaskRequest,
)
from tests.secagg.conftest import MODEL, config, drive

HARD = SecurityMode.HARDENED


def _grid_inputs(cfg: SecAggConfig, n: int) -> list[torch.Tensor]:
    # Values on the quantisation grid round exactly, so sums are exact.
    grid = np.arange(cfg.vector_length, dtype=np.float64) - cfg.vector_length // 2
    return [torch.from_numpy((grid + i) / cfg.scale) for i in range(n)]


@pytest.mark.parametrize(
    "drop",
    [
        {},
        {0: Round.ADVERTISE_KEYS, 1: Round.SHARE_KEYS, 2: Round.MASKED_INPUT},
        {3: Round.CONSISTENCY_CHECK, 4: Round.UNMASKING},
        {5: Round.MASKED_INPUT, 3: Round.CONSISTENCY_CHECK, 4: Round.CONSISTENCY_CHECK},
    ],
)
def test_hardened_session_recovers_exact_sum(drop: dict[int, Round]) -> None:
    n = 12
    cfg = SecAggConfig(
        num_clients=n, threshold=7, vector_length=6, max_weight=9, mode=HARD
    )
    inputs = _grid_inputs(cfg, n)
    weights = [1 + i % 4 for i in range(n)]
    res = run_session(inputs, weights, cfg, drop=drop)
    survivors = {i for i in range(n) if i not in drop or drop[i] > Round.MASKED_INPUT}
    assert res.survivors == survivors
    # Those who vanished before ConsistencyCheck stay in the sum, answer nothing.
    assert res.responders == {i for i in range(n) if i not in drop}
    exact = sum(weights[i] * inputs[i] for i in survivors)
    assert isinstance(exact, torch.Tensor)
    assert torch.allclose(res.weighted_sum, exact, rtol=0, atol=1e-12)
    assert res.total_weight == sum(weights[i] for i in survivors)


def test_run_session_with_given_identities_and_model_hash() -> None:
    consortium, keys = make_consortium(range(5))
    ident = Identities(consortium=consortium, keys=keys, model_hash=MODEL)
    cfg = config(n=5, t=4, d=4, mode=HARD)
    res = run_session([torch.full((4,), 0.5)] * 5, [1] * 5, cfg, identities=ident)
    assert res.total_weight == 5
    with pytest.raises(ConfigError, match="only used in hardened mode"):
        run_session([torch.zeros(4)] * 5, [1] * 5, config(n=5, d=4), identities=ident)


def test_too_few_signatures_abort_the_session() -> None:
    cfg = config(n=5, t=4, d=4, mode=HARD)
    drop = dict.fromkeys((0, 1, 2), Round.CONSISTENCY_CHECK)
    with pytest.raises(TooFewSurvivors, match="only 2 clients signed the survivor"):
        run_session([torch.zeros(4)] * 5, [1] * 5, cfg, drop=drop)


def test_client_credentials_are_checked() -> None:
    cfg = config(n=4, t=3, mode=HARD)
    consortium, keys = make_consortium(range(4))
    with pytest.raises(ConfigError, match="hardened mode needs the consortium"):
        SecAggClient(cfg, 0, consortium=consortium, identity=keys[0])
    with pytest.raises(ConfigError, match="model_hash must be 32 bytes"):
        SecAggClient(
            cfg, 0, consortium=consortium, identity=keys[0], model_hash=b"short"
        )
    with pytest.raises(UnknownIdentity, match="does not match client 0's registered"):
        SecAggClient(cfg, 0, consortium=consortium, identity=keys[1], model_hash=MODEL)
    with pytest.raises(UnknownIdentity, match="client 7 is not a registered"):
        SecAggClient(cfg, 7, consortium=consortium, identity=keys[1], model_hash=MODEL)
    with pytest.raises(ConfigError, match="needs this institution's participation"):
        SecAggClient(cfg, 0, consortium=consortium, identity=keys[0], model_hash=MODEL)
    with pytest.raises(ConfigError, match="are hardened-mode inputs"):
        SecAggClient(config(n=4, t=3), 0, model_hash=MODEL)
    with pytest.raises(ConfigError, match="are hardened-mode inputs"):
        SecAggClient(config(n=4, t=3), 0, participation=MemoryParticipationLog())
    with pytest.raises(ConfigError, match="given exactly in hardened mode"):
        SecAggServer(cfg)
    with pytest.raises(ConfigError, match="given exactly in hardened mode"):
        SecAggServer(config(n=4, t=3), consortium=consortium, model_hash=MODEL)


def test_consortium_refuses_duplicate_or_invalid_identities() -> None:
    _, keys = make_consortium(range(2))
    key = keys[0].public_key().public_bytes_raw()
    with pytest.raises(ConfigError, match="registered under two client ids"):
        Consortium.from_keys({0: key, 1: key})
    with pytest.raises(ConfigError, match="32 raw Ed25519 bytes"):
        Consortium.from_keys({0: key[:31]})
    with pytest.raises(ConfigError, match="distinct and sorted"):
        Consortium(((1, key), (0, bytes(32))))
    assert 0 in Consortium.from_keys({0: key}) and 1 not in Consortium.from_keys(
        {0: key}
    )


@pytest.mark.parametrize(
    ("n", "t", "policy", "message"),
    [
        (
            6,
            3,
            ClientPolicy(),
            r"threshold 3 gives 2t <= 6 share holders \+ 1 assumed colluders "
            r"\(of a roster of 6\)",
        ),
        (
            10,
            6,
            ClientPolicy(assumed_corrupt_fraction=0.2),
            r"threshold 6 gives 2t <= 10 share holders \+ 2 assumed colluders",
        ),
    ],
)
def test_hardened_policy_demands_2t_above_n_plus_corrupt(
    n: int, t: int, policy: ClientPolicy, message: str
) -> None:
    cfg = config(n=n, t=t, mode=HARD)
    consortium, keys = make_consortium(range(n))
    with pytest.raises(PolicyViolation, match=message):
        SecAggClient(
            cfg,
            0,
            policy=policy,
            consortium=consortium,
            identity=keys[0],
            model_hash=MODEL,
            participation=MemoryParticipationLog(),
        )
    # The same threshold is fine for a semi-honest session.
    SecAggClient(config(n=n, t=t), 0, policy=policy)


def test_policy_fractions_are_validated() -> None:
    with pytest.raises(ConfigError, match="max_dropout_fraction must be in"):
        ClientPolicy(max_dropout_fraction=1.5)
    with pytest.raises(ConfigError, match="assumed_corrupt_fraction must be in"):
        ClientPolicy(assumed_corrupt_fraction=-0.1)


def test_phase_order_of_the_consistency_round() -> None:
    run = drive(config(n=4, t=3, mode=HARD), Round.CONSISTENCY_CHECK)
    client = run.clients[0]
    with pytest.raises(ProtocolError, match="cannot answer an Unmasking request"):
        client.unmask(run.requests[0])
    client.consistency_check(run.requests[0])
    assert client.phase is ClientPhase.SIGNED and client.holds_secrets
    with pytest.raises(ProtocolError, match="cannot sign a survivor list in phase"):
        client.consistency_check(run.requests[0])
    semi = drive(config(n=4, t=3), Round.UNMASKING)
    with pytest.raises(ProtocolError, match="semi-honest session has no Consistency"):
        semi.clients[0].consistency_check(b"")


def test_secrets_are_discarded_after_the_hardened_unmask() -> None:
    run = drive(config(n=4, t=3, mode=HARD), Round.UNMASKING)
    for i, msg in run.requests.items():
        run.server.receive(i, run.clients[i].unmask(msg))
        assert not run.clients[i].holds_secrets
    with pytest.raises(ProtocolError, match="already answered an Unmasking request"):
        run.clients[0].unmask(run.requests[0])
    assert run.server.unmask().total_weight == sum(1 + i for i in range(4))


def test_honest_server_refuses_forged_signatures() -> None:
    cfg = config(n=4, t=3, mode=HARD)
    consortium, keys = make_consortium(range(4))
    server = SecAggServer(cfg, consortium=consortium, model_hash=MODEL)
    c_pk, s_pk = os.urandom(32), os.urandom(32)
    other_model = hashlib.sha256(b"another model").digest()
    payload = identity.advertise_payload(cfg.digest(), other_model, 1, c_pk, s_pk)
    forged = SignedAdvertiseKeys(
        sender=1, c_pk=c_pk, s_pk=s_pk, signature=identity.sign(keys[1], payload)
    )
    with pytest.raises(InvalidSignature, match="signature of client 1 does not"):
        server.receive(1, forged.to_bytes())
    sybil = SignedAdvertiseKeys(sender=9, c_pk=c_pk, s_pk=s_pk, signature=bytes(64))
    with pytest.raises(UnknownIdentity, match="client 9 is not a registered"):
        server.receive(9, sybil.to_bytes())
    assert server._adverts == {}


def test_honest_server_checks_consistency_signatures() -> None:
    run = drive(config(n=4, t=3, mode=HARD), Round.CONSISTENCY_CHECK)
    server = run.server
    wrong = identity.survivors_payload(server._session, (0, 1, 2))
    bad = ConsistencySignature(sender=0, signature=identity.sign(run.keys[0], wrong))
    with pytest.raises(InvalidSignature, match="signature of client 0"):
        server.receive(0, bad.to_bytes())
    for i in (0, 1, 2):
        server.receive(i, run.clients[i].consistency_check(run.requests[i]))
    requests = server.broadcast()
    assert set(requests) == {0, 1, 2}
    signers = [i for i, _ in SignedUnmaskRequest.from_bytes(requests[0]).signatures]
    assert signers == [0, 1, 2]
    run.clients[3].consistency_check(run.requests[3])
    # Client 3 did not sign in time: its Unmasking answer is not accepted.
    assert 3 not in requests
    with pytest.raises(ProtocolError, match="client 3 did not sign the survivor"):
        server.receive(
            3, UnmaskResponse(sender=3, seed_shares=(), key_shares=()).to_bytes()
        )
