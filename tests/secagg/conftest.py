"""The secagg test kit: configurations, deterministic entropy, sessions driven
up to any round, the ring back ends as a fixture, and a check that a refused
message changed nothing.

Test modules import the plain helpers from here (``from
tests.secagg.conftest import ...``) and take the fixtures by name.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg import (
    ClientPolicy,
    Consortium,
    QuantizedInput,
    RingBackend,
    Round,
    SecAggClient,
    SecAggConfig,
    SecAggError,
    SecAggServer,
    SecurityMode,
    make_consortium,
    quantize_input,
)
from secagg.backend import select_ring
from secagg.participation import MemoryParticipationLog, ParticipationLog
from secagg.ring import Ring
from secagg.signed_messages import SignedAdvertiseKeys, SignedKeyEntry

HARD = SecurityMode.HARDENED
SEMI = SecurityMode.SEMI_HONEST
CPU = torch.device("cpu")
BACKENDS = [RingBackend.NUMPY, RingBackend.TORCH]

#: RFC 8439 Appendix A.1 block vectors: (key, nonce, counter, first 16 bytes),
#: shared by the tests of every ChaCha20 back end.
RFC8439_A1 = [
    (bytes(32), bytes(12), 0, "76b8e0ada0f13d90405d6ae55386bd28"),
    (bytes(32), bytes(12), 1, "9f07e7be5551387a98ba977c732d080d"),
    (bytes(31) + b"\x01", bytes(12), 1, "3aeb5224ecf849929b9d828db1ced4dd"),
    (b"\x00\xff" + bytes(30), bytes(12), 2, "72d54dfbf12ec44b362692df94137f32"),
    (bytes(32), bytes(11) + b"\x02", 0, "c2c64d378cd536374ae204b9ef933fcd"),
]

LENIENT = ClientPolicy(min_cohort=1, min_threshold=1, min_threshold_fraction=0.0)
#: The model hash every honest party of a hardened test session holds.
MODEL = hashlib.sha256(b"the model the server announced").digest()


def config(n: int = 4, t: int = 3, d: int = 8, **kw: Any) -> SecAggConfig:
    """A small configuration with weights up to 15; ``kw`` (any
    :class:`SecAggConfig` field, ``threshold`` included) override."""
    fields = {"num_clients": n, "threshold": t, "vector_length": d, "max_weight": 15}
    return SecAggConfig(**(fields | kw))


def replay(label: bytes) -> Callable[[int], bytes]:
    """Deterministic stand-in for os.urandom: the same label replays the same
    bytes, so two runs get identical keys and rounding bits (tests only)."""
    counter = itertools.count()

    def entropy(n: int) -> bytes:
        block = label + next(counter).to_bytes(8, "little")
        return hashlib.shake_256(block).digest(n)

    return entropy


def keys(n: int, seed: int) -> list[bytes]:
    """``n`` distinct 32-byte PRG keys (test data, not secrets)."""
    return [hashlib.sha256(b"%d/%d" % (seed, i)).digest() for i in range(n)]


def residues(bits: int, n: int = 64, seed: int = 0) -> np.ndarray[Any, Any]:
    """``n`` reduced ring values as a host container (test data)."""
    data = hashlib.shake_256(b"%d/%d" % (bits, seed)).digest(8 * n)
    words = np.frombuffer(data, dtype="<u8") & np.uint64((1 << bits) - 1)
    return words.astype("<u4" if bits <= 32 else "<u8")


def quantized(cfg: SecAggConfig, seed: int = 0) -> QuantizedInput:
    """A deterministic input vector (test data only, not randomness for masks)."""
    x = np.linspace(-0.5, 0.5, cfg.vector_length) + 0.01 * seed
    return quantize_input(x, 1 + seed % cfg.max_weight, cfg)


@pytest.fixture(params=BACKENDS, ids=lambda b: b.value)
def backend(request: pytest.FixtureRequest) -> RingBackend:
    """Each ring back end in turn (``TORCH`` on CPU tensors here)."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def ring32(backend: RingBackend) -> Ring[Any]:
    """Z_2^32 on each back end in turn."""
    return select_ring(32, CPU, backend)


@dataclass
class Drive:
    """Clients and server of one session, stopped before ``round``."""

    cfg: SecAggConfig
    clients: dict[int, SecAggClient]
    server: SecAggServer
    requests: dict[int, bytes]  # server -> client messages for ``round``
    # Hardened mode only: the registry and every client's identity key.
    consortium: Consortium | None = None
    keys: dict[int, Ed25519PrivateKey] = field(default_factory=dict)


def parties(
    cfg: SecAggConfig,
    *,
    policy: ClientPolicy = LENIENT,
    backend: RingBackend | None = None,
    device: torch.device | str = "cpu",
    chunk_elems: int | None = None,
    entropy: bytes | None = None,
    model: bytes = MODEL,
    models: Mapping[int, bytes] | None = None,
    roster: tuple[Consortium, dict[int, Ed25519PrivateKey]] | None = None,
    logs: Mapping[int, ParticipationLog] | None = None,
) -> Drive:
    """Fresh clients 0..n-1 and a server, nothing sent yet.

    A hardened ``cfg`` gets a consortium of the same ids (or ``roster``);
    every party holds ``model`` unless ``models`` gives a client another, and
    its participation log ``logs[i]`` (a fresh in-memory one by default).
    ``entropy``, if given, labels replayed entropy for identities and
    clients.  ``backend`` and ``device`` place every party's ring;
    ``chunk_elems`` the server's.
    """
    ids = range(cfg.num_clients)
    consortium: Consortium | None = None
    ident: dict[int, Ed25519PrivateKey] = {}
    if cfg.mode is HARD and roster is not None:
        consortium, ident = roster
    elif cfg.mode is HARD and entropy is not None:
        consortium, ident = make_consortium(ids, replay(entropy + b"ids"))
    elif cfg.mode is HARD:
        consortium, ident = make_consortium(ids)
    models = models or {}
    clients = {}
    for i in ids:
        kw: dict[str, Any] = {"policy": policy, "backend": backend, "device": device}
        if entropy is not None:
            kw["entropy"] = replay(entropy + b"c%d" % i)
        if consortium is not None:
            kw.update(
                consortium=consortium,
                identity=ident[i],
                model_hash=models.get(i, model),
                participation=(logs or {}).get(i) or MemoryParticipationLog(),
            )
        clients[i] = SecAggClient(cfg, i, **kw)
    server = SecAggServer(
        cfg,
        backend=backend,
        device=device,
        chunk_elems=chunk_elems,
        consortium=consortium,
        model_hash=model if consortium is not None else None,
    )
    return Drive(cfg, clients, server, {}, consortium, ident)


def member(
    run: Drive, i: int, model: bytes = MODEL, policy: ClientPolicy = LENIENT
) -> SecAggClient:
    """A fresh client ``i`` of ``run``'s consortium, holding ``model``."""
    assert run.consortium is not None, "a hardened run has a consortium"
    return SecAggClient(
        run.cfg,
        i,
        policy=policy,
        consortium=run.consortium,
        identity=run.keys[i],
        model_hash=model,
        participation=MemoryParticipationLog(),
    )


def entry_of(advert: bytes) -> SignedKeyEntry:
    """The key-directory entry a server makes of a signed advert."""
    a = SignedAdvertiseKeys.from_bytes(advert)
    return SignedKeyEntry(
        client_id=a.sender, c_pk=a.c_pk, s_pk=a.s_pk, signature=a.signature
    )


def drive(
    cfg: SecAggConfig,
    until: Round | None = None,
    *,
    absent: Mapping[int, Round] | None = None,
    inputs: Callable[[SecAggConfig, int], QuantizedInput] = quantized,
    tap: Callable[[bytes], object] = lambda _: None,
    **kw: Any,
) -> Drive:
    """Run every round before ``until`` (all of them when ``None``, leaving
    the server ready for ``unmask()``); ``absent`` clients vanish before a
    round.  ``tap`` sees every message, in order; ``kw`` go to :func:`parties`.
    """
    run = parties(cfg, **kw)
    absent = absent or {}

    def alive(i: int, rnd: Round) -> bool:
        return i not in absent or rnd < absent[i]

    for i, c in run.clients.items():
        if alive(i, Round.ADVERTISE_KEYS):
            msg = c.advertise_keys()
            tap(msg)
            run.server.receive(i, msg)
    run.requests = run.server.broadcast()
    rounds = [Round.SHARE_KEYS, Round.MASKED_INPUT, Round.UNMASKING]
    if cfg.mode is HARD:
        rounds.insert(2, Round.CONSISTENCY_CHECK)
    for rnd in rounds:
        if until is not None and rnd >= until:
            break
        for i, msg in sorted(run.requests.items()):
            tap(msg)
            if alive(i, rnd):
                out = _answer(
                    run.clients[i], rnd, msg, functools.partial(inputs, cfg, i)
                )
                tap(out)
                run.server.receive(i, out)
        run.requests = run.server.broadcast() if rnd < Round.UNMASKING else {}
    return run


def _answer(
    c: SecAggClient, rnd: Round, msg: bytes, update: Callable[[], QuantizedInput]
) -> bytes:
    if rnd is Round.SHARE_KEYS:
        return c.share_keys(msg)
    if rnd is Round.MASKED_INPUT:
        return c.masked_input(msg, update())
    if rnd is Round.CONSISTENCY_CHECK:
        return c.consistency_check(msg)
    return c.unmask(msg)


def refuses(
    client: SecAggClient,
    call: Callable[[], bytes],
    error: type[SecAggError],
    message: str,
) -> None:
    """`call` raises `error` matching `message` and the client is unchanged."""
    before = client._state
    with pytest.raises(error, match=message):
        call()
    assert client._state is before
    assert client.holds_secrets
