"""SecAgg+ inside sessions: Harary neighbourhoods from the session id, shares
and masks over neighbours only, exact sums with dropouts at n = 200."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import torch

import secagg.config as config_module
from secagg import (
    ConfigError,
    GraphKind,
    GraphParameterError,
    ProtocolError,
    Round,
    SecAggConfig,
    SecAggError,
    SecurityMode,
    quantize_input,
    run_quantized_session,
)
from secagg.config import neighbours
from secagg.graph import ThreatModel, complete_graph_threshold
from secagg.messages import SHARE_CIPHERTEXT_BYTES, ShareKeys
from secagg.ring_numpy import NumpyRing
from tests.secagg.conftest import LENIENT, config, drive


def test_secaggplus_recovers_exact_sums_with_dropouts_at_n_200() -> None:
    n, d = 200, 16
    cfg = SecAggConfig.for_cohort(
        num_clients=n,
        vector_length=d,
        corrupt_fraction=0.05,
        dropout_fraction=0.10,
        complete_below=100,
        max_weight=7,
    )
    assert (cfg.graph, cfg.degree, cfg.threshold) == (GraphKind.HARARY, 24, 11)
    rounds = [Round.SHARE_KEYS, Round.MASKED_INPUT, Round.UNMASKING]
    # 18 clients (9 %) vanish, spread over every round.
    drop = {i: rounds[i % 3] for i in range(0, n, 11)}
    drop[1] = Round.ADVERTISE_KEYS
    grid = np.arange(d, dtype=np.float64) - d // 2
    q = {
        i: quantize_input((grid + i % 5) / cfg.scale, 1 + i % 7, cfg) for i in range(n)
    }
    start = time.perf_counter()
    res = run_quantized_session(q, cfg, drop=drop, policy=LENIENT)
    elapsed = time.perf_counter() - start
    survivors = {i for i in range(n) if i not in drop or drop[i] > Round.MASKED_INPUT}
    assert res.survivors == survivors
    ring = NumpyRing(cfg.ring_bits)
    expect = ring.zeros(cfg.encoded_length)
    for i in survivors:
        expect = ring.add(expect, ring.adopt(q[i].values))
    assert res.ring_sum.tolist() == expect.tolist()
    exact = sum((1 + i % 7) * (grid + i % 5) / cfg.scale for i in survivors)
    assert np.allclose(res.weighted_sum.numpy(), exact, rtol=0, atol=1e-9)
    assert res.total_weight == sum(1 + i % 7 for i in survivors)
    # Shares travel to 24 neighbours, not 199: a client's whole session
    # upload is below what its ShareKeys alone would be on the complete graph.
    assert max(res.bytes_sent.values()) < 199 * SHARE_CIPHERTEXT_BYTES
    assert elapsed < 30, f"n=200 SecAgg+ session took {elapsed:.1f} s"


def test_harary_neighbours_are_local_symmetric_and_session_bound() -> None:
    cfg = config(n=30, t=3, d=2, graph=GraphKind.HARARY, degree=6)
    ids = [7 * i + 3 for i in range(30)]  # real ids, not positions
    session = bytes(range(32))
    graph = {u: neighbours(cfg, session, u, ids) for u in ids}
    assert all(len(g) == 6 and u not in g and g <= set(ids) for u, g in graph.items())
    assert all(u in graph[v] for u, g in graph.items() for v in g)
    other = {u: neighbours(cfg, bytes(32), u, ids) for u in ids}
    assert other != graph
    with pytest.raises(ProtocolError, match="client 4 is not among the participants"):
        neighbours(cfg, session, 4, ids)
    # Fewer advertisers than degree + 1: the graph degenerates to complete.
    assert neighbours(cfg, session, 3, ids[:5]) == set(ids[1:5])


def test_clients_and_server_share_and_mask_over_neighbours_only() -> None:
    cfg = config(n=16, t=3, d=4, graph=GraphKind.HARARY, degree=4)
    run = drive(cfg, Round.UNMASKING)
    for i in run.requests:
        st = run.clients[i]._state
        assert st.neighbours == run.server._graph[i] and len(st.neighbours) == 4
        assert set(st.held) == st.neighbours  # shares only from neighbours


def test_server_with_another_graph_rejects_honest_shares(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A server that computes (or was told) other neighbourhoods cannot make
    # clients follow them: each client addresses its own, and they disagree.
    cfg = config(n=16, t=3, d=4, graph=GraphKind.HARARY, degree=4)
    run = drive(cfg, Round.SHARE_KEYS)
    real = config_module.neighbours
    session = run.server._session
    run.server._graph = {
        u: real(cfg, bytes(32), u, run.server._adverts) for u in run.server._adverts
    }
    out = ShareKeys.from_bytes(run.clients[0].share_keys(run.requests[0]))
    assert {v for v, _ in out.ciphertexts} == real(cfg, session, 0, range(16))
    with pytest.raises(ProtocolError, match="other clients than its neighbours"):
        run.server.receive(0, out.to_bytes())


def _cohort(n: int, **kw: Any) -> SecAggConfig:
    rates = {"corrupt_fraction": 0.05, "dropout_fraction": 0.1} | kw
    return SecAggConfig.for_cohort(
        num_clients=n, vector_length=4, max_weight=1, **rates
    )


def test_for_cohort_picks_the_graph_and_computes_parameters() -> None:
    small = _cohort(50)
    assert (small.graph, small.degree, small.threshold) == (GraphKind.COMPLETE, 0, 45)
    big = _cohort(1000)
    assert (big.graph, big.degree, big.threshold) == (GraphKind.HARARY, 36, 19)
    hard = _cohort(200, complete_below=100, mode=SecurityMode.HARDENED)
    # Worst case over the roster: 2t > k + 1 + ⌈α·N⌉ = 43 + 10.
    assert (hard.degree, hard.threshold) == (42, 27)
    assert hard.group_size == 43 and 2 * hard.threshold > hard.group_size + 10
    assert complete_graph_threshold(10, 0.2, 0.3, ThreatModel.SEMI_MALICIOUS) == 7
    with pytest.raises(GraphParameterError, match="2\\*dropout_fraction"):
        complete_graph_threshold(10, 0.3, 0.5, ThreatModel.SEMI_MALICIOUS)
    with pytest.raises(
        GraphParameterError, match="no hardened threshold for a complete graph of 600"
    ):
        _cohort(
            600, corrupt_fraction=0.3, dropout_fraction=0.4, mode=SecurityMode.HARDENED
        )


def test_graph_parameter_error_is_one_of_ours() -> None:
    assert issubclass(GraphParameterError, SecAggError)
    assert issubclass(GraphParameterError, ConfigError)
    assert issubclass(GraphParameterError, ValueError)


def test_hardened_secaggplus_session() -> None:
    cfg = SecAggConfig(
        num_clients=24,
        threshold=6,
        vector_length=3,
        max_weight=1,
        mode=SecurityMode.HARDENED,
        graph=GraphKind.HARARY,
        degree=8,
    )
    q = {i: quantize_input(torch.full((3,), 0.5), 1, cfg) for i in range(24)}
    drop = {0: Round.MASKED_INPUT, 5: Round.CONSISTENCY_CHECK, 9: Round.UNMASKING}
    res = run_quantized_session(q, cfg, drop=drop, policy=LENIENT)
    assert res.total_weight == 23 and res.responders == set(range(24)) - {0, 5, 9}
    assert torch.allclose(res.mean, torch.full((3,), 0.5).double(), atol=1 / cfg.scale)
