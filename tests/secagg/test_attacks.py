"""Malicious-server attacks, each played against hardened clients.

Every test plays the server, asserts the targeted client raised the named
error without releasing anything (its state object is the very same one and
it still holds its secrets), and asserts the target's input stays hidden:
the server never holds ``threshold`` shares of both the target's self-mask
seed ``b_u`` and its mask key ``s_u``, or holds no share of it at all.
``test_split_view_recovers_the_input_when_2t_le_n`` shows that the share
count is the right yardstick: where the checks do not apply it recovers the
target's exact input from the same material.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg import (
    ClientPolicy,
    ConsistencyError,
    InvalidKey,
    InvalidMessage,
    InvalidShare,
    InvalidSignature,
    MemoryParticipationLog,
    PolicyViolation,
    ProtocolError,
    Round,
    SecAggClient,
    SecAggError,
    TooFewSurvivors,
    UnknownIdentity,
    crypto,
    identity,
    make_consortium,
    shamir,
)
from secagg.backend import select_ring
from secagg.masking import client_masks
from secagg.messages import (
    SHARE_CIPHERTEXT_BYTES,
    MaskedInput,
    ShareKeys,
    ShareRelay,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.signed_messages import (
    ConsistencyRequest,
    ConsistencySignature,
    SignedKeyDirectory,
    SignedKeyEntry,
    SignedUnmaskRequest,
)
from tests.secagg.conftest import (
    HARD,
    MODEL,
    Drive,
    config,
    drive,
    entry_of,
    member,
    parties,
    quantized,
    refuses,
)


def _shares_of(owner: int, responses: Iterable[bytes]) -> tuple[int, int]:
    """How many shares of ``b_owner`` and of ``s_owner`` the server holds."""
    seeds = keys = 0
    for raw in responses:
        r = UnmaskResponse.from_bytes(raw)
        seeds += any(v == owner for v, _ in r.seed_shares)
        keys += any(v == owner for v, _ in r.key_shares)
    return seeds, keys


# Model inconsistency (Pasquini et al., CCS 2022) ----------------------------


def _hardened_clients(
    n: int, t: int, models: dict[int, bytes]
) -> dict[int, SecAggClient]:
    return parties(config(n=n, t=t, mode=HARD), models=models).clients


def _directory(adverts: dict[int, bytes], ids: Iterable[int]) -> bytes:
    """A key directory relayed without any check, as a malicious server would."""
    entries = tuple(entry_of(adverts[i]) for i in sorted(ids))
    return SignedKeyDirectory(entries=entries).to_bytes()


SUPPRESSION_MODEL = hashlib.sha256(b"dead-ReLU model for everyone else").digest()


def test_model_inconsistency_is_refused_at_share_keys() -> None:
    # The server sends target 3 the real model and everyone else a model whose
    # update is zero, so the "sum" would be the target's update alone.
    hashes = {0: SUPPRESSION_MODEL, 1: SUPPRESSION_MODEL, 2: SUPPRESSION_MODEL}
    clients = _hardened_clients(4, 3, hashes)
    adverts = {i: c.advertise_keys() for i, c in clients.items()}
    everyone = _directory(adverts, range(4))
    for i in (0, 1, 2):
        refuses(
            clients[i],
            lambda i=i: clients[i].share_keys(everyone),  # type: ignore[misc]
            InvalidSignature,
            "signature of client 3 does not verify",
        )
    target = clients[3]
    refuses(
        target,
        lambda: target.share_keys(everyone),
        InvalidSignature,
        "signature of client 0 does not verify",
    )
    # Hiding the others from the target does not help: it accepts only keys
    # signed over its own model, and alone it is below the threshold.
    alone = _directory(adverts, [3])
    refuses(
        target,
        lambda: target.share_keys(alone),
        TooFewSurvivors,
        "only 1 clients advertised keys; threshold is 3",
    )
    # The target never produced a share of b_3 or s_3, nor a masked input.
    with pytest.raises(ProtocolError, match="cannot send a masked input"):
        target.masked_input(b"", quantized(target._config))


def _relays(outputs: dict[int, bytes]) -> dict[int, bytes]:
    """Route ShareKeys bundles to their receivers (a transport-only server)."""
    inbox: dict[int, list[tuple[int, bytes, bytes]]] = {i: [] for i in outputs}
    for sender, raw in sorted(outputs.items()):
        msg = ShareKeys.from_bytes(raw)
        bound = dict(msg.commitments)
        for receiver, ct in msg.ciphertexts:
            inbox[receiver].append((sender, ct, bound[receiver]))
    return {
        i: ShareRelay(
            receiver=i,
            ciphertexts=tuple((v, ct) for v, ct, _ in cts),
            commitments=tuple((v, c) for v, _, c in cts),
        ).to_bytes()
        for i, cts in inbox.items()
    }


def test_model_hash_in_the_session_id_still_fails_closed_without_signatures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Defence in depth: even with every signature check disabled, the model
    # hash salts the session id, so the target's shares never open.
    monkeypatch.setattr(identity, "verify", lambda *args: None)
    clients = _hardened_clients(4, 3, {3: SUPPRESSION_MODEL})
    adverts = {i: c.advertise_keys() for i, c in clients.items()}
    directory = _directory(adverts, range(4))
    outputs = {i: c.share_keys(directory) for i, c in clients.items()}
    assert clients[0]._state.session != clients[3]._state.session
    # The pairwise mask 0 adds for 3 and the one 3 adds for 0 no longer cancel.
    assert clients[0]._state.pair_keys[3] != clients[3]._state.pair_keys[0]
    assert clients[0]._state.pair_keys[1] == clients[1]._state.pair_keys[0]
    relays = _relays(outputs)
    refuses(
        clients[0],
        lambda: clients[0].masked_input(relays[0], quantized(clients[0]._config)),
        InvalidShare,
        "share from client 3 to client 0 failed to authenticate",
    )
    target = clients[3]
    refuses(
        target,
        lambda: target.masked_input(relays[3], quantized(target._config)),
        InvalidShare,
        "share from client 0 to client 3 failed to authenticate",
    )


# Sybils and unknown identities ---------------------------------------------


def _sybil_entry(
    client_id: int, cfg_digest: bytes, signer: Ed25519PrivateKey
) -> SignedKeyEntry:
    c_pk = crypto.public_bytes(crypto.generate_private_key(os.urandom))
    s_pk = crypto.public_bytes(crypto.generate_private_key(os.urandom))
    payload = identity.advertise_payload(cfg_digest, MODEL, client_id, c_pk, s_pk)
    return SignedKeyEntry(
        client_id=client_id,
        c_pk=c_pk,
        s_pk=s_pk,
        signature=identity.sign(signer, payload),
    )


def _edit(data: bytes, entries: Iterable[SignedKeyEntry]) -> bytes:
    del data
    return SignedKeyDirectory(
        entries=tuple(sorted(entries, key=lambda e: e.client_id))
    ).to_bytes()


def test_sybils_are_refused() -> None:
    run = drive(config(n=4, t=3, mode=HARD), Round.SHARE_KEYS)
    target = run.clients[0]
    genuine = list(SignedKeyDirectory.from_bytes(run.requests[0]).entries)
    server_key = Ed25519PrivateKey.generate()
    digest = run.cfg.digest()
    # Sybils with server-made identities surround the target.
    flood = [genuine[0]] + [_sybil_entry(i, digest, server_key) for i in (7, 8, 9)]
    refuses(
        target,
        lambda: target.share_keys(_edit(run.requests[0], flood)),
        UnknownIdentity,
        "client 7 is not a registered consortium member",
    )
    # A Sybil posing as member 2 with keys the server controls.
    posing = [*genuine[:2], _sybil_entry(2, digest, server_key), genuine[3]]
    refuses(
        target,
        lambda: target.share_keys(_edit(run.requests[0], posing)),
        InvalidSignature,
        "signature of client 2 does not verify",
    )
    # Nothing left the target: the genuine directory still works.
    assert target.share_keys(run.requests[0])


# Duplicate identities and key replay ---------------------------------------


def test_duplicate_identity_and_key_replay_are_refused() -> None:
    run = drive(config(n=4, t=3, mode=HARD), Round.SHARE_KEYS)
    target = run.clients[0]
    genuine = list(SignedKeyDirectory.from_bytes(run.requests[0]).entries)
    # One identity listed twice cannot even be decoded.
    e1 = genuine[1]
    raw_entry = struct.pack("<I", 1) + e1.c_pk + e1.s_pk + e1.signature
    twice = (
        run.requests[0][:2]
        + struct.pack("<I", 5)
        + b"".join(
            struct.pack("<I", e.client_id) + e.c_pk + e.s_pk + e.signature
            for e in genuine
        )
        + raw_entry
    )
    refuses(
        target,
        lambda: target.share_keys(twice),
        InvalidMessage,
        "strictly increasing",
    )
    # Corrupt member 2 replays member 1's keys under its own valid signature,
    # so that its pairwise masks with the target would be known.
    payload = identity.advertise_payload(run.cfg.digest(), MODEL, 2, e1.c_pk, e1.s_pk)
    replayed = SignedKeyEntry(
        client_id=2,
        c_pk=e1.c_pk,
        s_pk=e1.s_pk,
        signature=identity.sign(run.keys[2], payload),
    )
    refuses(
        target,
        lambda: target.share_keys(
            _edit(run.requests[0], [*genuine[:2], replayed, genuine[3]])
        ),
        InvalidKey,
        "advertised public keys are not all distinct",
    )


def test_replay_of_an_earlier_rounds_advert_is_refused() -> None:
    # Member 1's advert from the previous training round (another model):
    # the server knows its s_sk if 1 was declared dropped back then.
    run = drive(config(n=4, t=3, mode=HARD), Round.SHARE_KEYS)
    old_model = hashlib.sha256(b"last round's model").digest()
    as_entry = entry_of(member(run, 1, old_model).advertise_keys())
    genuine = list(SignedKeyDirectory.from_bytes(run.requests[0]).entries)
    forged = _edit(run.requests[0], [genuine[0], as_entry, *genuine[2:]])
    target = run.clients[0]
    refuses(
        target,
        lambda: target.share_keys(forged),
        InvalidSignature,
        "signature of client 1 does not verify",
    )
    # Replaying the target's own stale entry is caught by the target itself.
    own_entry = entry_of(member(run, 0).advertise_keys())
    refuses(
        target,
        lambda: target.share_keys(_edit(run.requests[0], [own_entry, *genuine[1:]])),
        InvalidKey,
        "own entry in the key directory has other keys",
    )


# "Alive to A, dropped to B": inconsistent survivor lists -----------------------


def _sign_all(run: Drive, lists: dict[int, tuple[int, ...]]) -> dict[int, bytes]:
    out = {}
    for i, survivors in lists.items():
        req = ConsistencyRequest(survivors=survivors).to_bytes()
        out[i] = ConsistencySignature.from_bytes(
            run.clients[i].consistency_check(req)
        ).signature
    return out


def test_split_view_of_the_survivors_is_refused() -> None:
    # n = 6, one assumed colluder: t = 4 gives 2t = 8 > 6 + 1.
    run = drive(config(n=6, t=4, mode=HARD), Round.CONSISTENCY_CHECK)
    u, group_a, group_b = 5, (0, 1, 2), (3, 4)
    alive, dead = (0, 1, 2, 3, 4, 5), (0, 1, 2, 3, 4)
    sigs = _sign_all(run, {0: alive, 1: alive, 2: alive, 5: alive, 3: dead, 4: dead})
    to_a = SignedUnmaskRequest(
        survivors=alive,
        dropped=(),
        signatures=tuple((i, sigs[i]) for i in (0, 1, 2, 5)),
    ).to_bytes()
    responses = [run.clients[i].unmask(to_a) for i in (*group_a, u)]
    b_sigs = tuple((i, sigs[i]) for i in group_b)
    attempts = [
        (
            SignedUnmaskRequest(survivors=dead, dropped=(u,), signatures=b_sigs),
            ConsistencyError,
            "only 2 signatures on the survivor list from client 0's share holders; "
            "threshold is 4",
        ),
        (
            SignedUnmaskRequest(
                survivors=dead,
                dropped=(u,),
                signatures=tuple(sorted((i, sigs[i]) for i in (0, 1, 3, 4))),
            ),
            InvalidSignature,
            "signature of client 0 does not verify",
        ),
        (
            SignedUnmaskRequest(
                survivors=dead,
                dropped=(u,),
                signatures=(*b_sigs, (u, sigs[u])),
            ),
            ConsistencyError,
            r"signatures from clients outside it: \[5\]",
        ),
        (
            SignedUnmaskRequest(survivors=alive, dropped=(), signatures=(
                (0, sigs[0]), (1, sigs[1]), (2, sigs[2]), (5, sigs[5])
            )),
            ConsistencyError,
            "differs from the list this client signed",
        ),
    ]  # fmt: skip
    for i in group_b:
        client = run.clients[i]
        for request, error, message in attempts:
            data = request.to_bytes()
            refuses(client, lambda c=client, d=data: c.unmask(d), error, message)  # type: ignore[misc]
    seeds, keys = _shares_of(u, responses)
    assert seeds == 4 and keys == 0  # b_u only: y_u stays masked by s_u's masks


def _recover(run: Drive, u: int, y_u: MaskedInput, responses: list[bytes]) -> list[int]:
    """x_u from t shares of b_u and of s_u (what the checks must prevent)."""
    t, session = run.cfg.threshold, run.server._session
    seed_sh: dict[int, int] = {}
    key_sh: dict[int, int] = {}
    for raw in responses:
        r = UnmaskResponse.from_bytes(raw)
        seed_sh.update((r.sender + 1, y) for v, y in r.seed_shares if v == u)
        key_sh.update((r.sender + 1, y) for v, y in r.key_shares if v == u)
    b_u = shamir.reconstruct(seed_sh, t)
    s_u = crypto.private_from_bytes(shamir.reconstruct(key_sh, t))
    adverts = run.server._adverts
    pair_keys = {
        v: crypto.pair_mask_key(crypto.agree(s_u, a.s_pk), session, u, v)
        for v, a in adverts.items()
        if v != u
    }
    keys, signs = client_masks(u, b_u, session, pair_keys, pair_keys)
    ring = select_ring(run.cfg.ring_bits)
    masks = ring.masked(ring.zeros(y_u.length), keys, signs)
    x = ring.sub(ring.from_wire(y_u.payload, y_u.length), masks)
    return [int(v) for v in x]


def test_split_view_recovers_the_input_when_2t_le_n() -> None:
    # Semi-honest mode, n = 6, t = 3: no ConsistencyCheck and 2t <= n.  The
    # same split view hands the server t shares of both b_5 and s_5.
    run = drive(config(n=6, t=3), Round.MASKED_INPUT)
    masked, inputs = {}, {i: quantized(run.cfg, i) for i in run.requests}
    for i, msg in run.requests.items():
        out = run.clients[i].masked_input(msg, inputs[i])
        masked[i] = MaskedInput.from_bytes(out)
        run.server.receive(i, out)
    run.server.broadcast()
    u = 5
    to_a = UnmaskRequest(survivors=(0, 1, 2, 3, 4, 5), dropped=()).to_bytes()
    to_b = UnmaskRequest(survivors=(0, 1, 2, 3, 4), dropped=(u,)).to_bytes()
    responses = [run.clients[i].unmask(to_a) for i in (0, 1, u)]
    responses += [run.clients[i].unmask(to_b) for i in (2, 3, 4)]
    assert _shares_of(u, responses) == (3, 3)
    assert _recover(run, u, masked[u], responses) == [int(v) for v in inputs[u].values]
    # The hardened policy refuses exactly this threshold.
    consortium, keys = make_consortium(range(6))
    with pytest.raises(PolicyViolation, match="2t <= 6 share holders"):
        SecAggClient(
            config(n=6, t=3, mode=HARD),
            0,
            consortium=consortium,
            identity=keys[0],
            model_hash=MODEL,
            participation=MemoryParticipationLog(),
        )


# Forged and missing ConsistencyCheck signatures ------------------------------


def test_forged_or_missing_consistency_signatures_are_refused() -> None:
    run = drive(config(n=5, t=4, mode=HARD), Round.CONSISTENCY_CHECK)
    every = (0, 1, 2, 3, 4)
    sigs = _sign_all(run, dict.fromkeys(every, every))
    target = run.clients[0]
    other_session = identity.survivors_payload(os.urandom(32), every)

    def request(signatures: tuple[tuple[int, bytes], ...]) -> bytes:
        return SignedUnmaskRequest(
            survivors=(0, 1, 2, 3), dropped=(4,), signatures=signatures
        ).to_bytes()

    def signed(survivors: tuple[int, ...], ids: Iterable[int]) -> bytes:
        return SignedUnmaskRequest(
            survivors=survivors,
            dropped=(4,),
            signatures=tuple((i, sigs[i]) for i in ids),
        ).to_bytes()

    cases: list[tuple[bytes, type[SecAggError], str]] = [
        # The server declares 4 dropped; the list 0 signed had 4 alive.
        (signed((0, 1, 2, 3), (0, 1, 2)), ConsistencyError, "differs from the list"),
        (
            SignedUnmaskRequest(
                survivors=every, dropped=(), signatures=((1, sigs[1]), (2, sigs[2]))
            ).to_bytes(),
            ConsistencyError,
            "only 2 signatures on the survivor list from client 0's share "
            "holders; threshold is 4",
        ),
        (
            SignedUnmaskRequest(
                survivors=every,
                dropped=(),
                signatures=((1, sigs[1]), (2, os.urandom(64)), (3, sigs[3])),
            ).to_bytes(),
            InvalidSignature,
            "signature of client 2 does not verify",
        ),
        (
            SignedUnmaskRequest(
                survivors=every,
                dropped=(),
                signatures=(
                    (1, identity.sign(run.keys[1], other_session)),
                    (2, sigs[2]),
                    (3, sigs[3]),
                ),
            ).to_bytes(),
            InvalidSignature,
            "signature of client 1 does not verify",
        ),
        (
            SignedUnmaskRequest(
                survivors=every,
                dropped=(),
                signatures=((1, sigs[1]), (2, sigs[2]), (9, bytes(64))),
            ).to_bytes(),
            ConsistencyError,
            r"outside it: \[9\]",
        ),
    ]
    # Signer 2 counted twice: rewrite the count (u32) and repeat the last
    # (id u32 ‖ 64-byte signature) entry; the decoder refuses it.
    two = request(((1, sigs[1]), (2, sigs[2])))
    entry = 4 + 64
    dup = (
        two[: -2 * entry - 4] + struct.pack("<I", 3) + two[-2 * entry :] + two[-entry:]
    )
    cases.append((dup, InvalidMessage, "strictly increasing"))
    for data, error, message in cases:
        refuses(target, lambda d=data: target.unmask(d), error, message)  # type: ignore[misc]
    # Nothing was released; the genuine evidence is still accepted.
    genuine = SignedUnmaskRequest(
        survivors=every, dropped=(), signatures=tuple(sorted(sigs.items()))
    ).to_bytes()
    seeds, keys = _shares_of(4, [target.unmask(genuine)])
    assert (seeds, keys) == (1, 0)


# Too many declared dropouts ---------------------------------------------------


def test_too_many_declared_dropouts_are_refused() -> None:
    policy = ClientPolicy(max_dropout_fraction=0.2)
    run = drive(config(n=10, t=6, mode=HARD), Round.CONSISTENCY_CHECK, policy=policy)
    # Target 0 with six others; three honest clients "dropped".
    few = ConsistencyRequest(survivors=tuple(range(7))).to_bytes()
    for i in range(7):
        client = run.clients[i]
        refuses(
            client,
            lambda c=client: c.consistency_check(few),  # type: ignore[misc]
            PolicyViolation,
            "3 of 10 clients are missing; this client's policy allows at most 2",
        )
    # No signature was made, so no Unmasking request can carry t of them:
    # the server holds no share of anyone's b or s.
    assert all(c.phase.value == "masked" for c in run.clients.values())


def test_too_many_dropouts_refused_early_and_in_semi_honest_mode() -> None:
    policy = ClientPolicy(max_dropout_fraction=0.2)
    run = drive(config(n=10, t=6, mode=HARD), Round.SHARE_KEYS, policy=policy)
    entries = SignedKeyDirectory.from_bytes(run.requests[0]).entries
    small = SignedKeyDirectory(entries=entries[:7]).to_bytes()
    target = run.clients[0]
    refuses(
        target,
        lambda: target.share_keys(small),
        PolicyViolation,
        "3 of 10 clients are missing",
    )
    semi = drive(config(n=10, t=6), Round.UNMASKING, policy=policy)
    request = UnmaskRequest(survivors=tuple(range(7)), dropped=(7, 8, 9)).to_bytes()
    client = semi.clients[0]
    refuses(
        client,
        lambda: client.unmask(request),
        PolicyViolation,
        "3 of 10 clients are missing",
    )


# Server-supplied neighbour lists (SecAgg+ graph) -----------------------------


def test_server_supplied_neighbours_are_ignored() -> None:
    from secagg import GraphKind
    from secagg.threat import roster_graph

    cfg = config(n=12, t=4, d=4, mode=HARD, graph=GraphKind.HARARY, degree=4)
    run = drive(cfg, Round.SHARE_KEYS)
    target = run.clients[0]
    out = ShareKeys.from_bytes(target.share_keys(run.requests[0]))
    assert run.consortium is not None
    mine = roster_graph(run.consortium.members, 4).neighbours(0)
    assert {v for v, _ in out.ciphertexts} == mine and len(mine) == 4
    # The server wants the target surrounded by clients of its choice; it
    # can only relay their bundles, which the target refuses.
    chosen = sorted(set(range(1, 12)) - mine)[:4]
    fake = ShareRelay(
        receiver=0,
        ciphertexts=tuple((v, bytes(SHARE_CIPHERTEXT_BYTES)) for v in chosen),
        commitments=tuple((v, bytes(64)) for v in chosen),
    ).to_bytes()
    refuses(
        target,
        lambda: target.masked_input(fake, quantized(cfg)),
        ProtocolError,
        "shares relayed from clients that are not my neighbours",
    )
