"""fedshield's side of the benchmarks: thin drivers over ``secagg``'s public API.

Each builder returns either a :data:`~benchmarks._harness.Job` or a string
saying why our side cannot be measured.  Sessions are driven message by
message (every message through ``to_bytes``/``from_bytes``), as
``secagg.run_session`` does, so that one party's work can be timed alone.

Quantisation is set to Flower's precision: clip 8 and a step of
8 / (2^21 - 1) ≈ 3.8e-6 (``value_bits=22``), ring Z_2^32, every weight 1.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks._harness import (
    Job,
    SelfTimed,
    Stopwatch,
    Thunk,
    Timing,
    seeded_update,
)

CLIP = 8.0
BITS = 32
MAX_VALUE_BITS = 22


def status() -> str:
    """``"ready"``, or one line saying why our side cannot run."""
    try:
        import secagg
    except ImportError as exc:
        return f"secagg not importable: {exc}"
    needed = ("run_session", "SecAggConfig", "SecAggClient", "SecAggServer")
    missing = [name for name in needed if not hasattr(secagg, name)]
    return f"secagg lacks {', '.join(missing)}" if missing else "ready"


def has_sparse_graph() -> bool:
    """Whether ``SecAggConfig`` can select a SecAgg+ (Harary, degree k) graph."""
    import secagg
    import secagg.config

    fields = getattr(secagg.SecAggConfig, "__dataclass_fields__", {})
    kind = getattr(secagg.config, "GraphKind", None)
    return "degree" in fields and hasattr(kind, "HARARY")


def value_bits_for(n: int) -> int:
    """Flower's precision where the 32-bit ring's budget allows it for ``n``."""
    return min(MAX_VALUE_BITS, BITS - 1 - (n - 1).bit_length() - 1)


def make_config(n: int, d: int, threshold: int, k: int | None = None) -> Any:
    """The session configuration used for every one of our measurements:
    complete graph, or SecAgg+ (Harary graph of degree ``k``)."""
    import secagg

    graph: dict[str, Any] = {}
    if k is not None:
        from secagg.config import GraphKind  # type: ignore[attr-defined]

        graph = {"graph": GraphKind.HARARY, "degree": k}
    return secagg.SecAggConfig(
        **graph,
        num_clients=n,
        threshold=threshold,
        vector_length=d,
        ring_bits=BITS,
        clip=CLIP,
        value_bits=value_bits_for(n),
        max_weight=1,
    )


@dataclass(frozen=True)
class SharedSession:
    """A session after ShareKeys: every client holds its relayed shares."""

    config: Any
    clients: dict[int, Any]
    server: Any
    relays: dict[int, bytes]


def to_masked_input_round(config: Any, n: int) -> SharedSession:
    """Run AdvertiseKeys and ShareKeys for ``n`` clients (ids 0..n-1)."""
    import secagg

    clients = {i: secagg.SecAggClient(config, i) for i in range(n)}
    server = secagg.SecAggServer(config)
    for i, client in clients.items():
        server.receive(i, client.advertise_keys())
    for i, msg in server.broadcast().items():
        server.receive(i, clients[i].share_keys(msg))
    return SharedSession(config, clients, server, server.broadcast())


# --------------------------------------------------------------------- client


def client_job(d: int, k: int, seed: int) -> Job | str:
    """The client's masked-input stage with ``k`` neighbours (complete graph
    over k + 1 clients): k pair-key agreements, quantise, open the relayed
    shares, derive and add every mask, serialise.

    Our client agrees its pair keys in ShareKeys, Flower's in this stage; the
    thunk redoes k X25519 agreements + HKDF so both sides count that work.
    """
    state = status()
    if state != "ready":
        return state
    from secagg import crypto, quantize_input

    n = k + 1
    config = make_config(n, d, n // 2 + 1)
    x = seeded_update(d, seed)
    mine = crypto.generate_private_key(os.urandom)
    peers = [crypto.public_bytes(crypto.generate_private_key(os.urandom))] * k
    session = os.urandom(32)

    def prepare() -> Thunk:
        shared = to_masked_input_round(config, n)
        client, relay = shared.clients[0], shared.relays[0]

        def stage() -> bytes:
            for v, peer in enumerate(peers, start=1):
                crypto.pair_mask_key(crypto.agree(mine, peer), session, 0, v)
            q = quantize_input(x, 1, config)
            return bytes(client.masked_input(relay, q))

        return stage

    return prepare


# --------------------------------------------------------------------- server


@dataclass(frozen=True)
class ServerOutcome:
    """What the timed server work produced, checked after timing."""

    max_abs_err: float
    survivors: int
    dropped: int


def server_job(
    n: int, d: int, k: int | None, threshold: int, dropped: int, seed: int
) -> Job | str:
    """Server: fold the survivors' masked inputs, ask for shares, unmask and
    decode.  ``dropped`` clients vanish after ShareKeys (the costliest case).
    The survivors' own Unmasking answers are not timed."""
    state = status()
    if state != "ready":
        return state
    if k is not None and not has_sparse_graph():
        return "secagg: complete graph only (no SecAgg+ option in SecAggConfig)"
    config = make_config(n, d, threshold, k)
    ids = list(range(n))
    dead = set(random.Random(seed + 1).sample(ids, dropped))
    updates = {i: seeded_update(d, seed + i + 1) for i in ids}
    alive = [i for i in ids if i not in dead]
    expected = np.mean([updates[i].astype(np.float64) for i in alive], axis=0)

    def prepare() -> Thunk:
        from secagg import quantize_input

        shared = to_masked_input_round(config, n)
        masked = {
            i: shared.clients[i].masked_input(
                shared.relays[i], quantize_input(updates[i], 1, config)
            )
            for i in alive
        }
        return lambda: _serve(shared, masked, expected)

    return prepare


def _serve(
    shared: SharedSession, masked: Mapping[int, bytes], expected: np.ndarray[Any, Any]
) -> SelfTimed:
    server, watch = shared.server, Stopwatch()
    watch.start()
    for i, msg in masked.items():
        server.receive(i, msg)
    requests = server.broadcast()
    watch.stop()
    answers = {i: shared.clients[i].unmask(req) for i, req in requests.items()}
    watch.start()
    for i, answer in answers.items():
        server.receive(i, answer)
    agg = server.unmask()
    mean = agg.weighted_sum.numpy() / agg.total_weight
    watch.stop()
    err = float(np.abs(mean - expected).max())
    outcome = ServerOutcome(err, len(agg.survivors), len(agg.dropped))
    return SelfTimed(watch.timing(), outcome)


def describe_server_result(result: object) -> str:
    """A short correctness note on what the timed server call returned."""
    if isinstance(result, ServerOutcome):
        return f"ours max|err|={result.max_abs_err:.1e}"
    return ""


# ---------------------------------------------------------------------- bytes


def upload_bytes(n: int, d: int, k: int | None, threshold: int) -> int | str:
    """Largest per-client ``bytes_sent`` of a real ``run_session`` (every
    message's ``to_bytes()``), no dropouts."""
    state = status()
    if state != "ready":
        return state
    if k is not None and not has_sparse_graph():
        return "secagg: complete graph only (no SecAgg+ option in SecAggConfig)"
    import secagg

    config = make_config(n, d, threshold, k)
    inputs: Sequence[Any] = [seeded_update(d, i + 1) for i in range(n)]
    result = secagg.run_session(inputs, [1] * n, config)
    return max(result.bytes_sent.values())


# ------------------------------------------------------------ timed session

SESSION_PARTS = (
    "client_keys",  # AdvertiseKeys + ShareKeys, every client
    "server_keys",  # the server's side of those two rounds
    "client_masking",  # quantise + MaskedInput, every surviving client
    "client_unmask",  # the survivors' Unmasking answers
    "server_unmask",  # fold masked inputs, request shares, unmask, decode
)


@dataclass(frozen=True)
class TimedSession:
    """One session's per-party time (summed over clients) and traffic."""

    parts: Mapping[str, Timing]
    bytes_sent: Mapping[int, int]
    mean: np.ndarray[Any, np.dtype[np.float64]]
    survivors: int


def timed_session(
    config: Any, inputs: Mapping[int, Any], dropped: frozenset[int] = frozenset()
) -> TimedSession:
    """Run one session (weights 1); ``dropped`` clients vanish after ShareKeys.

    Every message goes through ``to_bytes``/``from_bytes``; each party's work
    runs on its own stopwatch.
    """
    import secagg

    w = {p: Stopwatch() for p in SESSION_PARTS}
    sent = dict.fromkeys(inputs, 0)

    def client(part: str, i: int, fn: Any, *args: Any) -> bytes:
        w[part].start()
        out = bytes(fn(*args))
        w[part].stop()
        sent[i] += len(out)
        return out

    def server(part: str, fn: Any, *args: Any) -> Any:
        w[part].start()
        out = fn(*args)
        w[part].stop()
        return out

    w["client_keys"].start()
    clients = {i: secagg.SecAggClient(config, i) for i in inputs}
    w["client_keys"].stop()
    srv = server("server_keys", secagg.SecAggServer, config)
    for i, c in clients.items():
        server(
            "server_keys", srv.receive, i, client("client_keys", i, c.advertise_keys)
        )
    for i, msg in server("server_keys", srv.broadcast).items():
        ans = client("client_keys", i, clients[i].share_keys, msg)
        server("server_keys", srv.receive, i, ans)
    relays = server("server_keys", srv.broadcast)
    masked = {}
    for i, relay in relays.items():
        if i in dropped:
            continue
        w["client_masking"].start()
        q = secagg.quantize_input(inputs[i], 1, config)
        w["client_masking"].stop()
        masked[i] = client("client_masking", i, clients[i].masked_input, relay, q)
    for i, msg in masked.items():
        server("server_unmask", srv.receive, i, msg)
    for i, req in server("server_unmask", srv.broadcast).items():
        ans = client("client_unmask", i, clients[i].unmask, req)
        server("server_unmask", srv.receive, i, ans)
    agg = server("server_unmask", srv.unmask)
    mean = agg.weighted_sum.numpy() / agg.total_weight
    return TimedSession(
        {p: sw.timing() for p, sw in w.items()}, sent, mean, len(agg.survivors)
    )


#: Threat parameters for SecAgg+ sizing: 10 % corrupt clients, 10 % dropout
#: (or the measured dropout rate where larger), semi-honest server.
SPARSE_CORRUPT, SPARSE_DROPOUT = 0.1, 0.1


def sparse_params(n: int, dropout: float = SPARSE_DROPOUT) -> tuple[int, int] | None:
    """(degree, threshold) from secagg's SecAgg+ finder, or ``None`` when
    secagg has no sparse graph or the finder needs the complete graph.

    The threshold is raised, where needed, to half the share holders,
    rounded up: an honest majority of each neighbourhood, as on the Flower
    side of the comparison."""
    if not has_sparse_graph():
        return None
    from secagg import graph

    try:
        found = graph.secaggplus_parameters(
            n,
            SPARSE_CORRUPT,
            max(dropout, SPARSE_DROPOUT),
            graph.ThreatModel.SEMI_HONEST,
        )
    except ValueError:
        return None
    if found.degree >= n - 1:
        return None
    k = int(found.degree)
    return k, max(int(found.threshold), math.ceil((k + 1) / 2), 2)
