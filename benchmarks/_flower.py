"""Flower's SecAgg+ work, rebuilt from Flower's own functions (flwr 1.41).

flwr is imported lazily (it is only installed in ``.venv-bench``) and its
objects are typed ``Any``.  Each builder replays, call for call, the code path
named in shared/reference/flower-notes.md §5.1:

* client: ``secaggplus_mod._collect_masked_vectors`` from the weighting step
  on (``parameters_multiply`` → ``quantize`` → ``factor_combine`` →
  ``pseudo_rand_gen`` self mask → k × (``generate_shared_key`` on re-parsed
  PEM keys → ``pseudo_rand_gen`` → add/sub) → ``parameters_mod``);
* server: ``SecAggPlusWorkflow.collect_masked_vectors_stage`` (sum + mod) and
  ``unmask_stage`` (``combine_shares`` of every share the active neighbours
  return, PRG re-expansion, ``dequantize``, offset and weight division);
* upload: the ``RecordDict`` each stage of ``secaggplus_mod`` returns,
  serialised with Flower's protobuf serde (``recorddict_to_proto``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from benchmarks._harness import seeded_update

CLIP = 8.0
TARGET_RANGE = 1 << 22
MOD_RANGE = 1 << 32
MAX_WEIGHT = 1000.0
NUM_EXAMPLES = 500


def load_flower() -> Any | None:
    """Flower's SecAgg+ functions as one namespace, or ``None`` without flwr."""
    try:
        from flwr.common import (
            Code,
            ConfigRecord,
            FitRes,
            Parameters,
            RecordDict,
            Status,
            ndarray_to_bytes,
        )
        from flwr.common.secure_aggregation import (
            ndarrays_arithmetic as arith,
        )
        from flwr.common.secure_aggregation import (
            quantization,
            secaggplus_utils,
        )
        from flwr.common.secure_aggregation.crypto import (
            shamir,
            symmetric_encryption,
        )
        from flwr.common.serde import recorddict_to_proto
        from flwr.compat.common import recorddict_compat
        from flwr.supercore.primitives import asymmetric
    except ImportError:
        return None
    return SimpleNamespace(
        arith=arith,
        quantization=quantization,
        utils=secaggplus_utils,
        shamir=shamir,
        sym=symmetric_encryption,
        asym=asymmetric,
        ndarray_to_bytes=ndarray_to_bytes,
        ConfigRecord=ConfigRecord,
        FitRes=FitRes,
        Parameters=Parameters,
        RecordDict=RecordDict,
        Status=Status,
        Code=Code,
        recorddict_to_proto=recorddict_to_proto,
        compat=recorddict_compat,
    )


@dataclass(frozen=True)
class FlowerNode:
    """One client's long-lived SecAgg+ state, as Flower keeps it (PEM bytes)."""

    nid: int
    sk1_pem: bytes
    pk1_pem: bytes
    pk2_pem: bytes
    rd_seed: bytes


def make_node(fl: Any, nid: int) -> FlowerNode:
    """Stage 0 (setup) of one client: two fresh P-384 pairs, PEM-encoded."""
    sk1, pk1 = fl.asym.generate_key_pairs()
    _, pk2 = fl.asym.generate_key_pairs()
    return FlowerNode(
        nid=nid,
        sk1_pem=fl.asym.private_key_to_bytes(sk1),
        pk1_pem=fl.asym.public_key_to_bytes(pk1),
        pk2_pem=fl.asym.public_key_to_bytes(pk2),
        rd_seed=os.urandom(32),
    )


def mask_update(
    fl: Any,
    node: FlowerNode,
    params: list[Any],
    neighbours: list[FlowerNode],
) -> list[Any]:
    """``_collect_masked_vectors`` from "Fit" on: weight, quantise, mask, mod."""
    a = fl.arith
    ratio = NUM_EXAMPLES / MAX_WEIGHT
    q_ratio = round(ratio * TARGET_RANGE)
    dq_ratio = q_ratio / TARGET_RANGE
    parameters = a.parameters_multiply(params, dq_ratio)
    quantized = fl.quantization.quantize(parameters, CLIP, TARGET_RANGE)
    quantized = a.factor_combine(q_ratio, quantized)
    dims = [arr.shape for arr in quantized]
    private_mask = fl.utils.pseudo_rand_gen(node.rd_seed, MOD_RANGE, dims)
    quantized = a.parameters_addition(quantized, private_mask)
    for other in neighbours:
        shared_key = fl.sym.generate_shared_key(
            fl.asym.bytes_to_private_key(node.sk1_pem),
            fl.asym.bytes_to_public_key(other.pk1_pem),
        )
        pairwise = fl.utils.pseudo_rand_gen(shared_key, MOD_RANGE, dims)
        if node.nid > other.nid:
            quantized = a.parameters_addition(quantized, pairwise)
        else:
            quantized = a.parameters_subtraction(quantized, pairwise)
    return list(fl.arith.parameters_mod(quantized, MOD_RANGE))


def client_job(fl: Any, d: int, k: int, seed: int) -> Callable[[], object]:
    """The client's whole masked-input stage at dimension ``d``, ``k`` neighbours.

    As ``_collect_masked_vectors`` runs it after training: open the k relayed
    Fernet share packets, weight and quantise, derive and add every mask
    (P-384 ECDH per neighbour on re-parsed PEM keys), reduce, ``np.save`` each
    array for upload.
    """
    np.random.seed(seed)  # Flower's stochastic rounding draws from np.random
    nodes = [make_node(fl, nid) for nid in range(1, k + 2)]
    params = [seeded_update(d, seed)]
    me, others = nodes[0], nodes[1:]
    threshold = (k + 1) // 2 + 1
    # One share set stands in for every sender: only the packet sizes matter.
    b_sh = fl.shamir.create_shares(os.urandom(32), threshold, k + 1)
    sk_sh = fl.shamir.create_shares(others[0].sk1_pem, threshold, k + 1)
    sk2_me, pk2_me = fl.asym.generate_key_pairs()
    inbox = []
    for other in others:
        sk2_other, _ = fl.asym.generate_key_pairs()
        key = fl.sym.generate_shared_key(sk2_other, pk2_me)
        plain = fl.utils.share_keys_plaintext_concat(
            other.nid, me.nid, b_sh[0], sk_sh[0]
        )
        inbox.append((other.nid, key, fl.sym.encrypt(key, plain)))
    del sk2_me

    def stage() -> list[bytes]:
        for src, key, ciphertext in inbox:
            actual, dst, _, _ = fl.utils.share_keys_plaintext_separate(
                fl.sym.decrypt(key, ciphertext)
            )
            if actual != src or dst != me.nid:
                raise RuntimeError("share packet names the wrong parties")
        masked = mask_update(fl, me, params, others)
        return [fl.ndarray_to_bytes(arr) for arr in masked]

    return stage


# --------------------------------------------------------------------------- server


def ring_neighbours(nids: list[int], num_shares: int, seed: int) -> dict[int, set[int]]:
    """The workflow's graph: shuffle, then num_shares>>1 on each side (self too)."""
    order = list(nids)
    random.Random(seed).shuffle(order)  # graph layout, not a secret
    half = num_shares >> 1
    n = len(order)
    return {
        nid: {order[(i + off) % n] for off in range(-half, half + 1)}
        for i, nid in enumerate(order)
    }


@dataclass(frozen=True)
class ServerCase:
    """Everything the server holds when the unmask stage starts."""

    masked: dict[int, list[Any]]
    neighbours: dict[int, set[int]]
    nodes: dict[int, FlowerNode]
    active: frozenset[int]
    shares: dict[int, list[bytes]]
    expected_mean: np.ndarray[Any, np.dtype[np.float64]]


def build_server_case(
    fl: Any, n: int, d: int, num_shares: int, threshold: int, dropped: int, seed: int
) -> ServerCase:
    """Run Flower's client stages for ``n`` clients; ``dropped`` vanish after
    ShareKeys (the only drop Flower survives, and the costliest for the server)."""
    np.random.seed(seed)
    nids = list(range(1, n + 1))
    neighbours = ring_neighbours(nids, num_shares, seed)
    nodes = {nid: make_node(fl, nid) for nid in nids}
    b_held: dict[int, dict[int, bytes]] = {nid: {} for nid in nids}
    sk_held: dict[int, dict[int, bytes]] = {nid: {} for nid in nids}
    for nid in nids:
        ordered = sorted(neighbours[nid])
        b_sh = fl.shamir.create_shares(nodes[nid].rd_seed, threshold, len(ordered))
        sk_sh = fl.shamir.create_shares(nodes[nid].sk1_pem, threshold, len(ordered))
        for idx, holder in enumerate(ordered):
            b_held[holder][nid] = b_sh[idx]
            sk_held[holder][nid] = sk_sh[idx]
    dead = set(random.Random(seed + 1).sample(nids, dropped))
    active = frozenset(set(nids) - dead)
    updates = {nid: seeded_update(d, seed + nid) for nid in nids}
    masked = {
        nid: mask_update(
            fl,
            nodes[nid],
            [updates[nid]],
            [nodes[v] for v in sorted(neighbours[nid] - {nid})],
        )
        for nid in sorted(active)
    }
    shares: dict[int, list[bytes]] = {nid: [] for nid in nids}
    for holder in sorted(active):  # each survivor answers for its neighbours
        for owner in sorted(neighbours[holder]):
            held = b_held if owner in active else sk_held
            shares[owner].append(held[holder][owner])
    mean = np.mean([updates[v].astype(np.float64) for v in sorted(active)], axis=0)
    return ServerCase(masked, neighbours, nodes, active, shares, np.clip(mean, -8, 8))


def unmask(fl: Any, case: ServerCase) -> Any:
    """collect_masked_vectors_stage's sum, then unmask_stage up to the mean."""
    a, prg = fl.arith, fl.utils.pseudo_rand_gen
    vec: list[Any] | None = None
    for nid in sorted(case.masked):
        vec = (
            case.masked[nid]
            if vec is None
            else a.parameters_addition(vec, case.masked[nid])
        )
    assert vec is not None
    vec = a.parameters_mod(vec, MOD_RANGE)
    dims = a.get_parameters_shape(vec)
    for nid, share_list in case.shares.items():
        secret = fl.shamir.combine_shares(share_list)
        if nid in case.active:
            vec = a.parameters_subtraction(vec, prg(secret, MOD_RANGE, dims))
            continue
        for other in sorted(case.neighbours[nid] - {nid}):
            key = fl.sym.generate_shared_key(
                fl.asym.bytes_to_private_key(secret),
                fl.asym.bytes_to_public_key(case.nodes[other].pk1_pem),
            )
            mask = prg(key, MOD_RANGE, dims)
            if nid > other:
                vec = a.parameters_addition(vec, mask)
            else:
                vec = a.parameters_subtraction(vec, mask)
    recon = a.parameters_mod(vec, MOD_RANGE)
    q_total, recon = a.factor_extract(recon)
    inv = TARGET_RANGE / q_total
    out = fl.quantization.dequantize(recon, CLIP, TARGET_RANGE)
    offset = -(len(case.active) - 1) * CLIP
    for arr in out:
        arr += offset
        arr *= inv
    return out[0]


# --------------------------------------------------------------------------- bytes


@dataclass(frozen=True)
class UploadBytes:
    """Bytes one Flower client uploads per stage (serialised RecordDicts)."""

    setup: int
    share_keys: int
    masked_input: int
    unmask: int

    @property
    def total(self) -> int:
        return self.setup + self.share_keys + self.masked_input + self.unmask


def _record_size(fl: Any, content: Any, res: dict[str, Any]) -> int:
    content.config_records["secaggplus_configs"] = fl.ConfigRecord(res, False)
    return int(fl.recorddict_to_proto(content).ByteSize())


def _empty(fl: Any) -> Any:
    return fl.RecordDict()


def upload_bytes(fl: Any, d: int, num_shares: int, threshold: int) -> UploadBytes:
    """What ``secaggplus_mod`` returns at each stage, for a client with
    ``num_shares - 1`` neighbours, none dropped, measured on the wire types.

    The masked vector is int64 with the mod's np.save header; its size does not
    depend on the values, so zeros stand in for it.  Node ids are random
    64-bit ints as Flower draws them.  Message metadata is not counted.
    """
    rng = random.Random(0)
    me = make_node(fl, rng.getrandbits(63))
    others = [make_node(fl, rng.getrandbits(63)) for _ in range(num_shares - 1)]
    setup = _record_size(fl, _empty(fl), {"pk1": me.pk1_pem, "pk2": me.pk2_pem})
    b_sh = fl.shamir.create_shares(me.rd_seed, threshold, num_shares)
    sk_sh = fl.shamir.create_shares(me.sk1_pem, threshold, num_shares)
    sk2, _ = fl.asym.generate_key_pairs()
    ctxts = []
    for idx, other in enumerate(others):
        key = fl.sym.generate_shared_key(
            sk2, fl.asym.bytes_to_public_key(other.pk2_pem)
        )
        plain = fl.utils.share_keys_plaintext_concat(
            me.nid, other.nid, b_sh[idx + 1], sk_sh[idx + 1]
        )
        ctxts.append(fl.sym.encrypt(key, plain))
    share_keys = _record_size(
        fl, _empty(fl), {"dsts": [o.nid for o in others], "ctxts": ctxts}
    )
    vec = [np.zeros(1, dtype=np.int64), np.zeros(d, dtype=np.int64)]
    fitres = fl.compat.fitres_to_recorddict(
        fl.FitRes(fl.Status(fl.Code.OK, ""), fl.Parameters([], ""), NUM_EXAMPLES, {}),
        False,
    )
    for record in fitres.array_records.values():
        record.clear()
    masked = _record_size(
        fl, fitres, {"masked_params": [fl.ndarray_to_bytes(v) for v in vec]}
    )
    unmask_res = {"nids": [me.nid] + [o.nid for o in others], "shares": b_sh}
    return UploadBytes(
        setup, share_keys, masked, _record_size(fl, _empty(fl), unmask_res)
    )
