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
#: Their session nonce (a fresh one is drawn from the OS by default).
NONCE = hashlib.sha256(b"nonce").digest()
HARARY = {"graph": GraphKind.HARARY, "degree": 4}

CASES: dict[str, tuple[dict[str, Any], dict[int, Round], str, int, int]] = {
    "semi32": (
        {"num_clients": 5, "threshold": 3, "vector_length": 7, "max_weight": 3},
        {1: Round.MASKED_INPUT, 3: Round.UNMASKING},
        "457771a47e02a393a0f58997ab91345c61b9277c8901b4227aea83f2183fb777",
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
        "b332f455015bb8c03f45f825754de70951e69f5d672d96bccc2e879480514ac6",
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
        "563dcc4819506f2015ea978adf0665a074d8256d34d3d437ee92181d241c2aa4",
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
        "65c2ec8120f7e1e207287379a64e279360e447f26af81f76bd0b7fd804ca336c",
        6,
        4,
    ),
    "harary": (
        {"num_clients": 9, "threshold": 3, "vector_length": 4, "max_weight": 2}
        | HARARY,
        {5: Round.MASKED_INPUT, 7: Round.CONSISTENCY_CHECK},
        "4b7b7d269c453927d2de61bed8ec1c27647686b255c421e61d14eb4a2a38fe27",
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
        "909047455094f10a8b6d573bde69ff8214a89cf4cd7e001ecb8e471ded66cd6a",
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
    got = transcript(SecAggConfig(**kw, session_nonce=NONCE), drop, backend)
    assert got == (digest, total_weight, clipped)
