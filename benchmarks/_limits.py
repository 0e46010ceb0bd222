"""Single-core throughput of the building blocks a mask costs, on this CPU.

These explain the client-masking ratio: a cryptographic mask cannot be
cheaper than its keystream, and Flower's non-cryptographic MT19937 sets the
other side.  All rates are measured here, median of ``repeats``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from benchmarks._harness import Job, interleave

BLOCK = 1 << 18  # 256 KiB of keystream per call, as secagg.prg uses


@dataclass(frozen=True)
class Rate:
    """Words (uint32 or int64 elements) per CPU second for one primitive."""

    name: str
    words: int
    cpu_s: float
    words_per_s: float


def _keystream(make: Callable[[], Any], words: int) -> Callable[[], object]:
    zeros, buf = memoryview(bytes(BLOCK)), memoryview(bytearray(BLOCK))
    total = 4 * words

    def run() -> None:
        enc = make()
        for start in range(0, total, BLOCK):
            n = min(BLOCK, total - start)
            enc.update_into(zeros[:n], buf[:n])

    return run


def _chacha() -> Any:
    return Cipher(algorithms.ChaCha20(os.urandom(32), bytes(16)), None).encryptor()


def _aes_ctr() -> Any:
    return Cipher(algorithms.AES(os.urandom(32)), modes.CTR(bytes(16))).encryptor()


def _add(words: int) -> Callable[[], object]:
    acc = np.zeros(words, dtype=np.uint32)
    ks = np.ones(BLOCK // 4, dtype=np.uint32)
    step = ks.shape[0]

    def run() -> None:
        for start in range(0, words, step):
            block = acc[start : start + step]
            np.add(block, ks[: block.shape[0]], out=block)

    return run


def measure_rates(fl: Any | None, words: int, repeats: int) -> list[Rate]:
    """ChaCha20 and AES-256-CTR keystream (pyca/OpenSSL, reused buffer),
    numpy uint32 in-place add, and Flower's ``pseudo_rand_gen`` when present."""
    thunks: dict[str, Callable[[], object]] = {
        "ChaCha20 keystream (pyca)": _keystream(_chacha, words),
        "AES-256-CTR keystream (pyca)": _keystream(_aes_ctr, words),
        "uint32 in-place add (numpy)": _add(words),
    }
    if fl is not None:
        prg = fl.utils.pseudo_rand_gen
        thunks["Flower pseudo_rand_gen (MT19937, int64)"] = lambda: prg(
            os.urandom(32), 1 << 32, [(words,)]
        )
    jobs: dict[str, Job] = {name: _const(t) for name, t in thunks.items()}
    res = interleave(jobs, repeats)
    return [
        Rate(name, words, m.summary.cpu_s, words / m.summary.cpu_s)
        for name, m in res.items()
    ]


def _const(thunk: Callable[[], object]) -> Job:
    return lambda: thunk
