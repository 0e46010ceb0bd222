"""A malicious coordinator with colluding members, against hardened clients.

Each test plays the coordinator (and its colluders, whose secrets it holds)
through the public messages, and asserts the named refusal and that the
target's input stays out of reach: the coordinator never holds ``threshold``
shares of both the target's self-mask seed and its mask key.  The contrast
tests mount the same attacks where the defences do not apply (semi-honest
mode, or colluders counted over the announced cohort) and recover the
target's exact input, so the yardstick is the right one.

SecAgg+ sessions here use the degree and threshold ``for_cohort`` builds for
a 500-member hardened roster (k = 32, t = 18) on a 100-member roster: the
neighbourhood arithmetic is the same and the suite stays fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import pytest

from secagg import (
    ClientPolicy,
    ConsistencyError,
    GraphKind,
    MemoryParticipationLog,
    PolicyViolation,
    Round,
    SecAggClient,
    SecAggConfig,
    SecurityMode,
    crypto,
    identity,
    make_consortium,
    shamir,
)
from secagg.backend import select_ring
from secagg.config import neighbours
from secagg.masking import client_masks
from secagg.messages import MaskedInput, ShareKeys, UnmaskRequest, UnmaskResponse
from secagg.signed_messages import (
    ConsistencyRequest,
    ConsistencySignature,
    SignedAdvertiseKeys,
    SignedKeyDirectory,
    SignedKeyEntry,
    SignedUnmaskRequest,
)
from secagg.threat import roster_graph
from tests.secagg.conftest import LENIENT, MODEL, Drive, config, drive, quantized

HARD = SecurityMode.HARDENED
K, T = 32, 18  # what for_cohort builds for 500 hardened members (α = 0, δ = 0.1)


def _client(cfg: SecAggConfig, i: int, n: int, policy: ClientPolicy = LENIENT) -> None:
    consortium, keys = make_consortium(range(n))
    SecAggClient(
        cfg,
        i,
        policy=policy,
        consortium=consortium,
        identity=keys[i],
        model_hash=MODEL,
        participation=MemoryParticipationLog(),
    )


def _held_by(owner: int, responses: Iterable[bytes]) -> dict[str, dict[int, int]]:
    """The coordinator's shares of ``owner``'s seed and mask key, by point."""
    out: dict[str, dict[int, int]] = {"seed": {}, "key": {}}
    for raw in responses:
        r = UnmaskResponse.from_bytes(raw)
        for kind, entries in (("seed", r.seed_shares), ("key", r.key_shares)):
            for v, y in entries:
                if v == owner:
                    out[kind][r.sender + 1] = y
    return out


# Attack 1: split view with one colluding neighbour (SecAgg+) -----------------


def test_for_cohort_at_500_members_and_the_old_threshold_is_refused() -> None:
    cfg = SecAggConfig.for_cohort(
        num_clients=500,
        vector_length=4,
        corrupt_fraction=0.0,
        dropout_fraction=0.1,
        max_weight=1,
        mode=HARD,
    )
    assert (cfg.graph, cfg.degree, cfg.threshold) == (GraphKind.HARARY, K, T)
    # t = 17 let one colluder complete both halves of a split view.
    old = dataclasses.replace(cfg, threshold=17)
    with pytest.raises(
        PolicyViolation,
        match=r"threshold 17 gives 2t <= 33 share holders \+ 1 assumed colluders "
        r"\(of a roster of 500\)",
    ):
        _client(old, 0, 500)


def test_grinding_the_directory_cannot_move_a_neighbourhood() -> None:
    cfg = config(n=100, t=T, d=4, mode=HARD, graph=GraphKind.HARARY, degree=K)
    run = drive(cfg, Round.SHARE_KEYS)
    assert run.consortium is not None
    fixed = roster_graph(run.consortium.members, K).neighbours(0)
    entries = SignedKeyDirectory.from_bytes(run.requests[0]).entries
    semi = dataclasses.replace(cfg, mode=SecurityMode.SEMI_HONEST)
    seen_hardened, seen_semi = set(), set()
    for omit in range(1, 13):  # twelve directories, each leaving one out
        listed = tuple(e for e in entries if e.client_id != omit)
        target = SecAggClient(
            cfg,
            0,
            policy=LENIENT,
            consortium=run.consortium,
            identity=run.keys[0],
            model_hash=MODEL,
            participation=MemoryParticipationLog(),
        )
        ad = SignedAdvertiseKeys.from_bytes(target.advertise_keys())
        mine = SignedKeyEntry(
            client_id=0, c_pk=ad.c_pk, s_pk=ad.s_pk, signature=ad.signature
        )
        others = tuple(e for e in listed if e.client_id != 0)
        directory = SignedKeyDirectory(entries=(mine, *others)).to_bytes()
        sent = ShareKeys.from_bytes(target.share_keys(directory))
        receivers = frozenset(v for v, _ in sent.ciphertexts)
        assert receivers == fixed - {omit}
        seen_hardened.add(receivers | ({omit} & fixed))
        # Contrast: the session-id graph of semi-honest SecAgg+ moves with
        # every directory the coordinator lists.
        session = crypto.session_id(
            semi.digest(), ((e.client_id, e.c_pk, e.s_pk) for e in listed)
        )
        seen_semi.add(neighbours(semi, session, 0, [e.client_id for e in listed]))
    assert seen_hardened == {fixed}
    assert len(seen_semi) >= 10


def _sign(run: Drive, i: int, survivors: tuple[int, ...]) -> bytes:
    raw = run.clients[i].consistency_check(
        ConsistencyRequest(survivors=survivors).to_bytes()
    )
    return ConsistencySignature.from_bytes(raw).signature


@pytest.mark.parametrize(
    ("alive_side", "rest_signs"),
    [(16, "alive"), (14, "dropped")],
    ids=["seed-side-complete", "key-side-complete"],
)
def test_split_view_with_a_colluding_neighbour_is_refused(
    alive_side: int, rest_signs: str
) -> None:
    cfg = config(n=100, t=T, d=4, mode=HARD, graph=GraphKind.HARARY, degree=K)
    run = drive(cfg, Round.CONSISTENCY_CHECK)
    assert run.consortium is not None
    graph = roster_graph(run.consortium.members, K)
    colluder = 0
    u = min(graph.neighbours(colluder))  # the coordinator picks the victim
    honest = sorted(graph.neighbours(u) - {colluder})
    group_a, group_b = honest[:alive_side], honest[alive_side:]
    alive = tuple(range(100))
    dead = tuple(i for i in alive if i != u)
    rest = [i for i in alive if i not in graph.closed(u)]
    signed_alive = [*group_a, u] + (rest if rest_signs == "alive" else [])
    signed_dead = group_b + (rest if rest_signs == "dropped" else [])
    session = run.server._session
    sigs_a = {i: _sign(run, i, alive) for i in signed_alive}
    sigs_b = {i: _sign(run, i, dead) for i in signed_dead}
    # The colluder signs both lists.
    for sigs, lst in ((sigs_a, alive), (sigs_b, dead)):
        payload = identity.survivors_payload(session, lst)
        sigs[colluder] = identity.sign(run.keys[colluder], payload)
    to_a = SignedUnmaskRequest(
        survivors=alive, dropped=(), signatures=tuple(sorted(sigs_a.items()))
    ).to_bytes()
    to_b = SignedUnmaskRequest(
        survivors=dead, dropped=(u,), signatures=tuple(sorted(sigs_b.items()))
    ).to_bytes()
    responses, refused = [], []
    for group, request in (([*group_a, u], to_a), (group_b, to_b)):
        for i in group:
            client = run.clients[i]
            before = client._state
            try:
                responses.append(client.unmask(request))
            except ConsistencyError as exc:
                assert "signatures on the survivor list from client" in str(exc)
                assert client._state is before and client.holds_secrets
                refused.append(i)
    held = _held_by(u, responses)
    key_share, seed_share = run.clients[colluder]._state.held[u]
    held["key"][colluder + 1] = key_share
    held["seed"][colluder + 1] = seed_share
    assert refused
    # The coordinator completes at most one kind: the input stays masked.
    assert min(len(held["seed"]), len(held["key"])) < T


def _recover(
    run: Drive, u: int, y_u: MaskedInput, held: dict[str, dict[int, int]]
) -> list[int]:
    """x_u from t shares of b_u and of s_u (what the defences must prevent)."""
    t, session = run.cfg.threshold, run.server._session
    b_u = shamir.reconstruct(held["seed"], t)
    s_u = crypto.private_from_bytes(shamir.reconstruct(held["key"], t))
    adverts = run.server._adverts
    pair_keys = {
        v: crypto.pair_mask_key(crypto.agree(s_u, adverts[v].s_pk), session, u, v)
        for v in run.server._graph[u]
    }
    keys, signs = client_masks(u, b_u, session, pair_keys, pair_keys)
    ring = select_ring(run.cfg.ring_bits)
    masks = ring.masked(ring.zeros(y_u.length), keys, signs)
    return [int(x) for x in ring.sub(ring.from_wire(y_u.payload, y_u.length), masks)]


def test_contrast_semi_honest_secaggplus_split_view_recovers_the_input() -> None:
    # Semi-honest SecAgg+ has no signed survivor list: one colluding
    # neighbour and a 15/16 split of the honest ones give t = 17 of both.
    cfg = config(n=100, t=17, d=4, graph=GraphKind.HARARY, degree=K)
    run = drive(cfg, Round.MASKED_INPUT)
    masked, inputs = {}, {i: quantized(cfg, i) for i in run.requests}
    for i, msg in run.requests.items():
        out = run.clients[i].masked_input(msg, inputs[i])
        masked[i] = MaskedInput.from_bytes(out)
        run.server.receive(i, out)
    run.server.broadcast()
    colluder = 0
    u = min(run.server._graph[colluder])
    honest = sorted(run.server._graph[u] - {colluder})
    alive = tuple(range(100))
    dead = tuple(i for i in alive if i != u)
    to_a = UnmaskRequest(survivors=alive, dropped=()).to_bytes()
    to_b = UnmaskRequest(survivors=dead, dropped=(u,)).to_bytes()
    responses = [run.clients[i].unmask(to_a) for i in [*honest[:15], u]]
    responses += [run.clients[i].unmask(to_b) for i in honest[15:]]
    held = _held_by(u, responses)
    key_share, seed_share = run.clients[colluder]._state.held[u]
    held["key"][colluder + 1], held["seed"][colluder + 1] = key_share, seed_share
    assert (len(held["seed"]), len(held["key"])) == (17, 17)
    assert _recover(run, u, masked[u], held) == [int(v) for v in inputs[u].values]


# Attack 2: colluders counted over the cohort, not the consortium -------------


def test_corrupt_count_is_over_the_roster_not_the_announced_cohort() -> None:
    policy = dataclasses.replace(LENIENT, assumed_corrupt_fraction=0.2)
    # 20 members, 4 of them colluders; the coordinator announces 8 (t = 6).
    with pytest.raises(
        PolicyViolation,
        match=r"threshold 6 gives 2t <= 8 share holders \+ 4 assumed colluders "
        r"\(of a roster of 20\)",
    ):
        _client(config(n=8, t=6, mode=HARD), 0, 20, policy)
    # {target, one colluder}: a sum of two is the target's input.
    with pytest.raises(
        PolicyViolation,
        match=r"cohort of 2 is below this client's minimum of 6 \(4 assumed "
        r"colluders of a roster of 20 \+ 2 honest\)",
    ):
        _client(config(n=2, t=2, mode=HARD), 0, 20, policy)


def test_contrast_colluders_counted_over_the_cohort_lose_the_input() -> None:
    # The same 8-client session, accepted by clients that count 0.2 of the
    # announced 8 (2) colluders: the coordinator's 4 complete both lists.
    cfg = config(n=8, t=6, d=4, mode=HARD)
    policy = dataclasses.replace(LENIENT, assumed_corrupt_fraction=0.2)
    run = drive(cfg, Round.MASKED_INPUT, policy=policy)
    masked, inputs = {}, {i: quantized(cfg, i) for i in run.requests}
    for i, msg in run.requests.items():
        out = run.clients[i].masked_input(msg, inputs[i])
        masked[i] = MaskedInput.from_bytes(out)
        run.server.receive(i, out)
    run.server.broadcast()
    u, h1, (h2, h3), colluders = 0, 1, (2, 3), (4, 5, 6, 7)
    alive, dead = tuple(range(8)), tuple(range(1, 8))
    session = run.server._session
    sigs_a = {i: _sign(run, i, alive) for i in (u, h1)}
    sigs_b = {i: _sign(run, i, dead) for i in (h2, h3)}
    for c in colluders:
        for sigs, lst in ((sigs_a, alive), (sigs_b, dead)):
            payload = identity.survivors_payload(session, lst)
            sigs[c] = identity.sign(run.keys[c], payload)
    to_a = SignedUnmaskRequest(
        survivors=alive, dropped=(), signatures=tuple(sorted(sigs_a.items()))
    ).to_bytes()
    to_b = SignedUnmaskRequest(
        survivors=dead, dropped=(u,), signatures=tuple(sorted(sigs_b.items()))
    ).to_bytes()
    responses = [run.clients[i].unmask(to_a) for i in (u, h1)]
    responses += [run.clients[i].unmask(to_b) for i in (h2, h3)]
    held = _held_by(u, responses)
    for c in colluders:
        key_share, seed_share = run.clients[c]._state.held[u]
        held["key"][c + 1], held["seed"][c + 1] = key_share, seed_share
    assert _recover(run, u, masked[u], held) == [int(v) for v in inputs[u].values]


# Attack 3: ghost survivors around a carved-out segment (SecAgg+) -------------


def test_ghost_survivors_around_a_segment_are_refused() -> None:
    cfg = config(n=100, t=T, d=4, mode=HARD, graph=GraphKind.HARARY, degree=K)
    run = drive(cfg, Round.CONSISTENCY_CHECK)
    assert run.consortium is not None
    ring = roster_graph(run.consortium.members, K).ring
    # Keep 17 consecutive members, declare the 16 on each side dropped and
    # list every other member (none of whom the segment can see) as alive.
    segment = ring[16:33]
    declared_dropped = set(ring[:16] + ring[33:49])
    listed = tuple(sorted(set(ring) - declared_dropped))
    request = ConsistencyRequest(survivors=listed).to_bytes()
    for i in segment:
        client = run.clients[i]
        before = client._state
        with pytest.raises(
            PolicyViolation,
            match="16 of this client's 32 neighbours are missing; with 1 assumed "
            "colluders it allows at most 15",
        ):
            client.consistency_check(request)
        assert client._state is before and client.holds_secrets
    # No segment member signed, so no share of any of them can be released.
    assert all(run.clients[i].phase.value == "masked" for i in segment)
