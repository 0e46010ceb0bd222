"""Coordinator and node agents without Flower: the rules each side enforces.

A :class:`LocalTransport` hands each request straight to an in-process
:class:`NodeAgent`, so the attacks below run in a second each.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

import dp
from core.flower.agent import AgentLink, recv_frame, send_frame, serve
from core.flower.coordinator import Coordinator
from core.flower.errors import AgentError
from core.flower.node import NodeAgent, ledger_file
from core.flower.pki import DryRunPKI, make_test_pki
from core.flower.protocol import Stage, StageReply, StageRequest
from core.flower.roster import load_roster
from core.flower.settings import AppSettings
from tests.deploy.conftest import session_secrets
from tests.deploy.helpers import (
    LocalTransport,
    breast_cancer_csvs,
    in_process_reference,
    node_configs,
    quantisation_bound,
    run_config,
)

RUN = 42
# The session nonce the coordinator would draw for the first stage.
NONCE = bytes(range(32))


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[Path], DryRunPKI]:
    folder = tmp_path_factory.mktemp("coordinator")
    paths, _ = breast_cancer_csvs(folder / "data", 4)
    pki = make_test_pki(folder / "pki", [f"h{i}" for i in range(4)])
    return folder, paths, pki


def _setup(folder: Path, paths: list[Path], pki: DryRunPKI, name: str, **config):
    cfg = run_config(**config)
    nodes = node_configs(paths, folder / name, pki)
    agents = {500 + i: NodeAgent(n) for i, n in enumerate(nodes)}
    transport = LocalTransport(RUN, agents, cfg)
    coordinator = Coordinator(
        AppSettings.from_run_config(cfg), RUN, transport,
        roster=load_roster(pki.roster), out_dir=folder / name / "out",
    )  # fmt: skip
    return cfg, nodes, agents, transport, coordinator


def test_hardened_rounds_equal_the_in_process_run(world) -> None:
    folder, paths, pki = world
    cfg, nodes, agents, _, coordinator = _setup(folder, paths, pki, "equal")
    result = coordinator.run()
    assert [r.survivors for r in result.rounds] == [(0, 1, 2, 3)] * 2
    reference = in_process_reference(cfg, nodes, RUN)
    bound = 2 * quantisation_bound(cfg) + 1e-6
    assert torch.allclose(result.params, reference, atol=bound, rtol=0)
    # Every session ended, and its secrets with it.
    assert not any(a.holds_session for a in agents.values())


def test_no_session_secret_ever_leaves_a_node(world) -> None:
    folder, paths, pki = world
    _, _, agents, transport, coordinator = _setup(folder, paths, pki, "secrets")
    secrets: set[bytes] = set()

    def snapshot(node: int, reply: StageReply) -> StageReply:
        # White-box: read the live session's secrets straight after each stage.
        session = agents[node]._session
        if session is not None:
            secrets.update(session_secrets(session.client))
        return reply

    transport.tamper = snapshot
    coordinator.run()
    assert len(secrets) == 2 * 3 * 4  # per round: c_sk, s_sk and seed of 4 nodes
    sent = [r.payload for _, _, r in transport.seen if isinstance(r, StageReply)]
    sent += [q.payload for _, q, _ in transport.seen]
    assert sent and not any(s in p for s in secrets for p in sent)


def test_a_failed_stage_drops_the_session_and_its_secrets(world) -> None:
    folder, paths, pki = world
    cfg, _nodes, agents, _, coordinator = _setup(folder, paths, pki, "fail")
    agent = agents[500]
    model = coordinator.params.numpy().astype("<f4").tobytes()
    agent.handle(RUN, StageRequest(stage=Stage.TRAIN, nonce=NONCE, round_index=1,
                                   payload=model, cohort=4), cfg)  # fmt: skip
    client = agent._session.client  # type: ignore[union-attr]
    assert agent.holds_session and client.holds_secrets
    with pytest.raises(AgentError, match="expected stage share-keys, got unmasking"):
        agent.handle(RUN, StageRequest(stage=Stage.UNMASKING, round_index=1,
                                       payload=b""), cfg)  # fmt: skip
    assert not agent.holds_session and not client.holds_secrets


def test_a_round_the_policy_refuses_costs_no_privacy_budget(world) -> None:
    folder, paths, pki = world
    cfg = run_config(**{"privacy.enabled": True})
    node = dataclasses.replace(
        node_configs(paths, folder / "policy", pki)[0], min_cohort=5
    )
    agent = NodeAgent(node)
    model = AppSettings.from_run_config(cfg).build_model()
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    request = StageRequest(
        stage=Stage.TRAIN, nonce=NONCE,
        round_index=1,
        cohort=4,
        payload=params.numpy().astype("<f4").tobytes(),
    )
    with pytest.raises(AgentError, match="train: PolicyViolation"):
        agent.handle(RUN, request, cfg)
    path = ledger_file(node.ledger_dir, node.institution)
    assert not path.exists() or not dp.read_ledger(path)


def test_a_weight_above_max_weight_is_refused_not_capped(world) -> None:
    folder, paths, pki = world
    # Each institution holds about 112 rows; the run allows weights up to 64.
    cfg = run_config(**{"privacy.enabled": True, "secure_aggregation.max_weight": 64})
    node = node_configs(paths, folder / "weight", pki)[0]
    agent = NodeAgent(node)
    model = AppSettings.from_run_config(cfg).build_model()
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    request = StageRequest(
        stage=Stage.TRAIN, nonce=NONCE, round_index=1, cohort=4,
        payload=params.numpy().astype("<f4").tobytes(),
    )  # fmt: skip
    with pytest.raises(AgentError, match=r"rows, above the run's secure_aggregation"):
        agent.handle(RUN, request, cfg)
    # Refused before training: no privacy budget spent.
    path = ledger_file(node.ledger_dir, node.institution)
    assert not path.exists() or not dp.read_ledger(path)


def test_a_rolled_back_ledger_is_refused(world) -> None:
    folder, paths, pki = world
    _cfg, nodes, agents, _, coordinator = _setup(
        folder, paths, pki, "rollback", **{"privacy.enabled": True}
    )
    assert coordinator.run_round(1).survivors == (0, 1, 2, 3)
    # Institution 0 restarts from a ledger with its newest entry removed.
    path = ledger_file(nodes[0].ledger_dir, 0)
    path.write_text("")
    agents[500] = NodeAgent(nodes[0])
    coordinator._transport.agents[500] = agents[500]  # type: ignore[attr-defined]
    second = coordinator.run_round(2)
    assert second.survivors == (1, 2, 3)
    assert second.dropouts["train"] == [500]


def test_a_node_claiming_another_institution_is_refused(world) -> None:
    folder, paths, pki = world
    _, _, _, transport, coordinator = _setup(folder, paths, pki, "sybil")

    def claim(node: int, reply: StageReply) -> StageReply:
        if node == 503 and reply.stage is Stage.TRAIN:
            return dataclasses.replace(reply, institution=7)  # not a member
        if node == 502 and reply.stage is Stage.TRAIN:
            return dataclasses.replace(reply, institution=1)  # a member's id
        return reply

    transport.tamper = claim
    outcome = coordinator.run_round(1)
    # 503 is no member; 502 cannot sign as 1 (and 1 itself answered too).
    assert sorted(outcome.dropouts["train"]) == [502, 503]
    assert outcome.aborted is not None and "TooFewSurvivors" in outcome.aborted


def test_the_agent_socket_answers_and_refuses_garbage(world, tmp_path: Path) -> None:
    folder, paths, pki = world
    cfg = run_config()
    agent = NodeAgent(node_configs(paths, folder / "socket", pki)[0])
    sock = Path("/tmp") / f"fedshield-test-{id(tmp_path)}.sock"
    ready = tmp_path / "ready"
    threading.Thread(target=serve, args=(agent, sock), kwargs={"ready": ready},
                     daemon=True).start()  # fmt: skip
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sock.stat().st_mode & 0o077 == 0  # the institution's user only
    model = AppSettings.from_run_config(cfg).build_model()
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    request = StageRequest(
        stage=Stage.TRAIN, nonce=NONCE,
        round_index=1,
        cohort=4,
        payload=params.numpy().astype("<f4").tobytes(),
    )
    reply = AgentLink(sock).request(RUN, request, cfg)
    assert reply.stage is Stage.TRAIN and reply.institution == 0
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(sock))
        send_frame(conn, {"run": RUN, "fields": {"stage": "train"}}, b"")
        answer, _ = recv_frame(conn)
    assert answer == {"ok": False, "error": "request lacks 'run_config'"}
    with pytest.raises(AgentError, match="expected stage share-keys"):
        AgentLink(sock).request(RUN, StageRequest(
            stage=Stage.MASKED_INPUT, round_index=1, payload=b""), cfg)  # fmt: skip
    sock.unlink()


def test_the_agent_cli_refuses_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "core.flower.agent", "--socket", str(tmp_path / "s"),
         "--institution", "0", "--data", str(tmp_path / "missing.csv"),
         "--label", "y", "--ledger-dir", str(tmp_path / "ledger")],
        capture_output=True, text=True, timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"fedshield agent: data file {str(tmp_path / 'missing.csv')!r} does not exist"
    ]


@pytest.mark.parametrize(
    ("config", "policy", "message"),
    [
        ({"privacy.enabled": False}, {"require_dp": True},
         "the run turns DP-SGD off; this institution requires it"),
        ({"privacy.enabled": True, "privacy.epsilon_budget": 50.0},
         {"epsilon_cap": 10.0},
         "the run's privacy budget 50 exceeds this institution's cap 10"),
    ],
)  # fmt: skip
def test_the_institution_refuses_a_run_config_weaker_than_its_own(
    world, config, policy, message
) -> None:
    folder, paths, pki = world
    cfg = run_config(**config)
    node = dataclasses.replace(node_configs(paths, folder / "weak", pki)[0], **policy)
    model = AppSettings.from_run_config(cfg).build_model()
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    request = StageRequest(stage=Stage.TRAIN, nonce=NONCE, round_index=1, cohort=4,
                           payload=params.numpy().astype("<f4").tobytes())  # fmt: skip
    agent = NodeAgent(node)
    with pytest.raises(AgentError, match=f"train: {message}"):
        agent.handle(RUN, request, cfg)
    assert not agent.holds_session
    assert not ledger_file(node.ledger_dir, node.institution).exists()


def test_a_silent_node_sits_one_round_out_then_is_invited_again(world) -> None:
    folder, paths, pki = world
    _, _, _, transport, coordinator = _setup(
        folder, paths, pki, "resting", **{"federation.rounds": 3}
    )
    transport.silent = {503}  # a site that went down after round 1's TRAIN
    first = coordinator.run_round(1)
    assert first.dropouts["train"] == [503] and first.survivors == (0, 1, 2)
    transport.silent = set()  # it is back
    second = coordinator.run_round(2)
    assert second.resting == (503,) and second.nodes == 3
    assert second.survivors == (0, 1, 2)
    third = coordinator.run_round(3)
    assert third.resting == () and third.survivors == (0, 1, 2, 3)
