"""Known-answer transcripts: every byte of deterministic whole sessions.

Each case runs a session with injected entropy and hashes, in order, every
message each party sends and receives, then the unmasked ring sum.  The
digests pin the wire format, the key derivations, the masks, the rounding
and the share encoding at once: any change to a byte on the wire fails here.
Both ring back ends must give the same transcript.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
import torch

from secagg import (
    GraphKind,
    QuantizedInput,
    RingBackend,
    Round,
    SecAggConfig,
    quantize_input,
)
from tests.secagg.conftest import HARD, drive, replay

#: The model hash of every party of these sessions.
MODEL = hashlib.sha256(b"model").digest()
HARARY = {"graph": GraphKind.HARARY, "degree": 4}

CASES: dict[str, tuple[dict[str, Any], dict[int, Round], str, int, int]] = {
    "semi32": (
        {"num_clients": 5, "threshold": 3, "vector_length": 7, "max_weight": 3},
        {1: Round.MASKED_INPUT, 3: Round.UNMASKING},
        "8c24bc095baaad73deef1c738d61e0e0d1831922dbccdf2639040d9248ae9004",
        7,
        4,
    ),
    "semi20": (
        {
            "num_clients": 4,
            "threshold": 2,
            "vector_length": 9,
            "max_weight": 3,
            "ring_bits": 20,
            "value_bits": 8,
        },
        {2: Round.MASKED_INPUT},
        "ee2e4056567dca0e2fc0f0b17b37ef60484557626d596d9201f12667304639aa",
        4,
        4,
    ),
    "semi45": (
        {
            "num_clients": 4,
            "threshold": 3,
            "vector_length": 5,
            "max_weight": 7,
            "ring_bits": 45,
            "clip": 0.5,
        },
        {},
        "fcb67c1350ee22e96544c5d0e2c3a5da308cabf5aabd355b67e002162b7a5335",
        10,
        10,
    ),
    "hard32": (
        {
            "num_clients": 5,
            "threshold": 4,
            "vector_length": 6,
            "max_weight": 2,
            "mode": HARD,
        },
        {0: Round.MASKED_INPUT},
        "2bb4a26c5a9212bcee91967b7e99bcf79dedcdb72a84b40e50bfa46f5aed723f",
        6,
        4,
    ),
    "harary": (
        {"num_clients": 9, "threshold": 3, "vector_length": 4, "max_weight": 2}
        | HARARY,
        {5: Round.MASKED_INPUT, 7: Round.CONSISTENCY_CHECK},
        "f5d3811c39d3382748284404ca239b911e205cc821e984b72d33afaf05cf9803",
        11,
        6,
    ),
    "hardharary": (
        {
            "num_clients": 9,
            "threshold": 4,
            "vector_length": 4,
            "max_weight": 2,
            "mode": HARD,
        }
        | HARARY,
        {5: Round.MASKED_INPUT},
        "b296ce1adc5d9f9b88fd21369e595ecbb0b7578976a16b0479e4e1dac98ad00e",
        11,
        6,
    ),
}


def _input(cfg: SecAggConfig, i: int) -> QuantizedInput:
    n, d = cfg.num_clients, cfg.vector_length
    x = torch.linspace(-1.5, 1.5, d, dtype=torch.float64) * (i + 1) / n
    return quantize_input(x, 1 + i % cfg.max_weight, cfg, entropy=replay(b"q%d" % i))


def transcript(
    cfg: SecAggConfig, drop: dict[int, Round], backend: RingBackend
) -> tuple[str, int, int]:
    """SHA-256 over every message in order and the ring sum; Σw; clip count."""
    h = hashlib.sha256()
    run = drive(
        cfg, absent=drop, inputs=_input, tap=h.update, entropy=b"", backend=backend,
        model=MODEL,
    )  # fmt: skip
    agg = run.server.unmask()
    h.update(np.asarray(agg.ring_sum, dtype="<u8").tobytes())
    return h.hexdigest(), agg.total_weight, agg.clipped


@pytest.mark.parametrize("name", sorted(CASES))
def test_transcript_known_answer(name: str, backend: RingBackend) -> None:
    kw, drop, digest, total_weight, clipped = CASES[name]
    got = transcript(SecAggConfig(**kw), drop, backend)
    assert got == (digest, total_weight, clipped)
