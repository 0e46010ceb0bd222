"""DP-SGD noise drawn where the model lives: ChaCha20 and Gaussians in torch.

For a model on a GPU, noise made on the host would cross the bus as a
d-sized tensor every step.  :class:`DeviceGaussian` instead runs the ChaCha20
block function (RFC 8439) as torch integer ops on the parameter's device and
turns the keystream into Gaussians there:

* **Keystream.** Words live in int64 lanes with an explicit 32-bit mask after
  every addition (torch's ``uint32`` lacks the needed ops, and int64 never
  relies on signed overflow), so the same code is bit-exact on CPU and CUDA
  and equals pyca's ChaCha20 with the 16-byte nonce ``counter || 0⁹⁶``.  The
  32-byte key comes from the host :class:`~dp.noise.SecureRandom`; after
  ``REKEY_BYTES`` a fresh key is drawn from it, so (key, counter) never repeats.
* **Uniforms.** Two words give ``u = ((((w₀ >> 11) << 32) | w₁) + 0.5) · 2⁻⁵³``,
  53 random bits, strictly inside (0, 1).
* **Gaussians.** Box–Muller in float64 (no rejection, so every output uses a
  fixed slice of keystream; trigonometry is cheap on a GPU), and the same
  floating-point defence as the host: each output is the sum of four
  independent N(0, σ²) draws, halved, rounded once to the parameter's dtype.
"""

from __future__ import annotations

import math
import struct

import torch

from dp.errors import InvalidNoiseInputError
from dp.noise import REKEY_BYTES, SecureRandom

__all__ = ["DeviceGaussian", "chacha20_block_words"]

_M32 = 0xFFFFFFFF
_CONSTANTS = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)  # "expand 32-byte k"
_BLOCK_BYTES = 64
#: Outputs per chunk: 8 keystream words each, so 2²² outputs ≈ 256 MiB of lanes.
_CHUNK_OUT = 1 << 22


def _rotl(x: torch.Tensor, n: int) -> torch.Tensor:
    """In-place 32-bit left rotation of int64 lanes holding values < 2³²."""
    high = x >> (32 - n)
    return x.bitwise_left_shift_(n).bitwise_and_(_M32).bitwise_or_(high)


def _quarter(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor
) -> None:
    """RFC 8439 quarter rounds on the rows of four (4, B) views, in place."""
    a.add_(b).bitwise_and_(_M32)
    _rotl(d.bitwise_xor_(a), 16)
    c.add_(d).bitwise_and_(_M32)
    _rotl(b.bitwise_xor_(c), 12)
    a.add_(b).bitwise_and_(_M32)
    _rotl(d.bitwise_xor_(a), 8)
    c.add_(d).bitwise_and_(_M32)
    _rotl(b.bitwise_xor_(c), 7)


def chacha20_block_words(
    key: bytes, counter: int, n_blocks: int, device: torch.device | str
) -> torch.Tensor:
    """Keystream words of blocks ``counter .. counter + n_blocks − 1`` (zero nonce).

    Returns an int64 tensor of ``16 · n_blocks`` little-endian 32-bit words,
    values in [0, 2³²), on ``device``.
    """
    if len(key) != 32:
        raise InvalidNoiseInputError(f"key must be 32 bytes; found {len(key)}")
    if counter < 0 or n_blocks < 0 or counter + n_blocks > 1 << 32:
        raise InvalidNoiseInputError("the 32-bit ChaCha20 block counter would overflow")
    state = torch.zeros((16, n_blocks), dtype=torch.int64, device=device)
    for row, word in enumerate(_CONSTANTS + struct.unpack("<8I", key)):
        state[row].fill_(word)
    state[12] = torch.arange(
        counter, counter + n_blocks, dtype=torch.int64, device=device
    )
    x = state.clone()
    a, b, c, d = x[0:4], x[4:8], x[8:12], x[12:16]
    for _ in range(10):
        _quarter(a, b, c, d)  # column round
        # Rotating rows b, c, d by 1, 2, 3 lines the diagonals up as columns.
        b.copy_(b.roll(-1, 0))
        c.copy_(c.roll(-2, 0))
        d.copy_(d.roll(-3, 0))
        _quarter(a, b, c, d)  # diagonal round
        b.copy_(b.roll(1, 0))
        c.copy_(c.roll(2, 0))
        d.copy_(d.roll(3, 0))
    x.add_(state).bitwise_and_(_M32)
    return x.t().reshape(-1)


class DeviceGaussian:
    """N(0, σ²) noise on any torch device from a ChaCha20 stream keyed by the host."""

    def __init__(self, host: SecureRandom) -> None:
        self._host = host
        self._key = host.random_bytes(32)
        self._counter = 0

    def _blocks(self, n_blocks: int, device: torch.device) -> torch.Tensor:
        if (self._counter + n_blocks) * _BLOCK_BYTES > REKEY_BYTES:
            self._key = self._host.random_bytes(32)
            self._counter = 0
        words = chacha20_block_words(self._key, self._counter, n_blocks, device)
        self._counter += n_blocks
        return words

    def uniform(self, n: int, device: torch.device | str) -> torch.Tensor:
        """``n`` float64 uniforms on (0, 1), 53 random bits each, on ``device``."""
        words = self._blocks(-(-2 * n // 16), torch.device(device))[: 2 * n]
        pairs = words.view(n, 2)
        k = ((pairs[:, 0] >> 11) << 32) | pairs[:, 1]  # int64, in [0, 2⁵³)
        return (k.to(torch.float64) + 0.5) * 2.0**-53

    def _noise_chunk(self, n: int, device: torch.device) -> torch.Tensor:
        u = self.uniform(4 * n, device).view(2, 2, n)
        radius = torch.sqrt(-2.0 * torch.log(u[0]))  # (2, n)
        angle = (2.0 * math.pi) * u[1]
        z = radius * torch.cos(angle) + radius * torch.sin(angle)
        return z.sum(dim=0)  # four N(0, 1) draws per output

    def gaussian_noise(
        self,
        std: float,
        shape: tuple[int, ...],
        *,
        device: torch.device | str,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """N(0, std²) noise of ``shape`` on ``device``: 4 draws summed, halved."""
        if not (math.isfinite(std) and std >= 0):
            raise InvalidNoiseInputError(f"std must be finite and >= 0; found {std!r}")
        dev = torch.device(device)
        n = math.prod(shape)
        out = torch.empty(n, dtype=dtype, device=dev)
        for start in range(0, n, _CHUNK_OUT):
            m = min(_CHUNK_OUT, n - start)
            out[start : start + m] = self._noise_chunk(m, dev) * (0.5 * std)
        return out.view(shape)
