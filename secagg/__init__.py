"""Secure aggregation: Bonawitz et al. (CCS 2017) pairwise double masking.

The server learns only the sum of the survivors' weighted, quantised updates,
their total weight and the total count of clipped coordinates, and recovers
that sum exactly while at least ``threshold`` clients survive every round.

``SecurityMode.HARDENED`` defends against a malicious coordinator colluding
with up to ⌈α·N⌉ of the N consortium members (:mod:`secagg.threat` states
the guarantee): Ed25519 identities (:class:`Consortium`), each client's own
model hash and a once-used session nonce in the signed keys, thresholds and
SecAgg+ neighbourhoods fixed by the roster, a ConsistencyCheck whose
signatures are counted among each peer's share holders, a bound on declared
dropouts, and one contribution per model in a durable
:class:`ParticipationLog`.  In every mode shares carry commitments, so the
server names cheating clients and decodes around them.  ``GraphKind.HARARY``
runs SecAgg+ (:meth:`SecAggConfig.for_cohort` computes degree and threshold
from the cohort size, α and δ).
``RingBackend.TORCH`` (the default off the CPU) keeps quantisation, masking
and summation on the update's device (:mod:`secagg.ring_torch`);
:class:`SecAggSettings` holds what an application configures once and builds
each round's :class:`SecAggConfig` and :class:`ClientPolicy`.

>>> import torch
>>> cfg = SecAggConfig(num_clients=3, threshold=2, vector_length=1, max_weight=3)
>>> r = run_session([torch.tensor([0.5])] * 3, [1, 1, 2], cfg)
>>> r.total_weight, round(float(r.mean[0]), 3)
(4, 0.5)
>>> hard = SecAggConfig(num_clients=3, threshold=3, vector_length=1,
...                     max_weight=1, mode=SecurityMode.HARDENED)
>>> run_session([torch.tensor([0.5])] * 3, [1, 1, 1], hard).total_weight
3
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from secagg import errors
from secagg.errors import *  # noqa: F403 (the whole error family is public)

if TYPE_CHECKING:
    from secagg.client import ClientPhase, SecAggClient
    from secagg.config import (
        COMPLETE_GRAPH_BELOW,
        GraphKind,
        Round,
        SecAggConfig,
        SecurityMode,
    )
    from secagg.identity import Consortium, make_consortium
    from secagg.limits import MAX_RING_BITS
    from secagg.local import (
        Identities,
        SessionResult,
        run_quantized_session,
        run_session,
    )
    from secagg.participation import (
        FileParticipationLog,
        MemoryParticipationLog,
        ParticipationLog,
    )
    from secagg.policy import ClientPolicy
    from secagg.quantize import QuantizedInput, quantize_input
    from secagg.ring import RingBackend
    from secagg.server import SecAggAggregate, SecAggServer
    from secagg.settings import SecAggSettings

#: Public name -> the module that defines it.  Names load on first use, so
#: reading a configuration (``SecAggSettings``) does not pay for torch.
_HOME: dict[str, str] = {
    "ClientPhase": "secagg.client",
    "SecAggClient": "secagg.client",
    **dict.fromkeys(
        ("COMPLETE_GRAPH_BELOW", "GraphKind", "Round", "SecAggConfig", "SecurityMode"),
        "secagg.config",
    ),
    "Consortium": "secagg.identity",
    "make_consortium": "secagg.identity",
    **dict.fromkeys(
        ("Identities", "SessionResult", "run_quantized_session", "run_session"),
        "secagg.local",
    ),
    **dict.fromkeys(
        ("FileParticipationLog", "MemoryParticipationLog", "ParticipationLog"),
        "secagg.participation",
    ),
    "ClientPolicy": "secagg.policy",
    "QuantizedInput": "secagg.quantize",
    "quantize_input": "secagg.quantize",
    "MAX_RING_BITS": "secagg.limits",
    "RingBackend": "secagg.ring",
    "SecAggAggregate": "secagg.server",
    "SecAggServer": "secagg.server",
    "SecAggSettings": "secagg.settings",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'secagg' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "COMPLETE_GRAPH_BELOW",
    "MAX_RING_BITS",
    "ClientPhase",
    "ClientPolicy",
    "Consortium",
    "FileParticipationLog",
    "GraphKind",
    "Identities",
    "MemoryParticipationLog",
    "ParticipationLog",
    "QuantizedInput",
    "RingBackend",
    "Round",
    "SecAggAggregate",
    "SecAggClient",
    "SecAggConfig",
    "SecAggServer",
    "SecAggSettings",
    "SecurityMode",
    "SessionResult",
    "make_consortium",
    "quantize_input",
    "run_quantized_session",
    "run_session",
]
__all__ += errors.__all__
