"""CSPRNG-backed randomness for DP-SGD: Gaussian noise and Poisson sampling.

Opacus's ``secure_mode`` needs ``torchcsprng``, which no longer installs
(notes §2.7), and ``torch.Generator`` (Philox / Mersenne Twister) is not a
cryptographic generator: its state can be recovered from outputs.  Everything
random that DP-SGD's guarantee rests on comes from :class:`ChaCha20Random`
instead:

* **Keystream.** ChaCha20 (pyca ``cryptography``) keyed with 32 bytes from
  ``os.urandom``, encrypting zeros.  A key is never reused with the same nonce:
  each generator has its own random key, and after ``REKEY_BYTES`` of output it
  replaces its key with the next 32 keystream bytes ("fast key erasure"), long
  before the 32-bit block counter could wrap.
* **Uniforms.** Each 64-bit little-endian word ``w`` becomes
  ``((w >> 11) + 0.5) · 2⁻⁵³``: all 53 mantissa bits are random and the value
  lies strictly inside (0, 1), so ``log(u)`` never sees 0.
* **Gaussians.** Box–Muller on pairs of those uniforms, in float64.
* **Floating-point attack defence.** A single Box–Muller float output reveals
  more than its distribution suggests: the set of values it can take is sparse
  and structured, so ``signal + noise`` can betray ``signal`` (Mironov 2012;
  Holohan & Braghin 2021, arXiv 2107.10138; the Opacus-specific attack is
  arXiv 2112.05307).  As in Opacus's secure mode we use the "2n-sample" fix with
  n = 2: every output is the sum of four independent N(0, σ²) samples, halved,
  which is exactly N(0, σ²) in distribution but raises the attack cost to about
  2^(53·3) (arXiv 2107.10138 §5.1).  We prefer this over a discrete Gaussian
  because DP-SGD's analysis (and Opacus's accountants) are for the continuous
  Gaussian, and over a ziggurat because its tables add attack surface.
* **Poisson sampling.** Inclusion is ``u < q`` with the same 53-bit uniforms.

>>> rng = ChaCha20Random.insecure_from_key_for_testing(bytes(32))
>>> rng.gaussian_noise(1.0, (3,)).shape
(3,)
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms

__all__ = ["REKEY_BYTES", "ChaCha20Random"]

#: Bytes of keystream produced under one key before it is replaced.
REKEY_BYTES = 1 << 30

_KEY_BYTES = 32
_TWO_POW_MINUS_53 = 2.0**-53


class ChaCha20Random:
    """Cryptographically secure uniforms, Gaussians and Bernoulli draws.

    Build with ``ChaCha20Random()`` (key from ``os.urandom``).  Tests that need
    reproducible output use :meth:`insecure_from_key_for_testing`, which warns.
    """

    __slots__ = ("_bytes_under_key", "_stream")

    def __init__(self) -> None:
        self._stream = self._cipher(os.urandom(_KEY_BYTES))
        self._bytes_under_key = 0

    @classmethod
    def insecure_from_key_for_testing(cls, key: bytes) -> ChaCha20Random:
        """A generator with a caller-chosen key.  Never use outside tests."""
        if len(key) != _KEY_BYTES:
            raise ValueError(f"key must be {_KEY_BYTES} bytes; found {len(key)}")
        warnings.warn(
            "ChaCha20Random with a fixed key is deterministic: test use only",
            RuntimeWarning,
            stacklevel=2,
        )
        rng = cls.__new__(cls)
        rng._stream = cls._cipher(key)
        rng._bytes_under_key = 0
        return rng

    @staticmethod
    def _cipher(key: bytes) -> CipherContext:
        # The key is fresh for every stream, so a fixed all-zero nonce (and
        # initial counter) never repeats a (key, nonce) pair.
        return Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()

    def random_bytes(self, n: int) -> bytes:
        """``n`` keystream bytes."""
        if n < 0:
            raise ValueError(f"n must be >= 0; found {n}")
        if self._bytes_under_key + n > REKEY_BYTES:
            new_key = self._stream.update(bytes(_KEY_BYTES))
            self._stream = self._cipher(new_key)
            self._bytes_under_key = 0
        self._bytes_under_key += n
        return self._stream.update(bytes(n))

    def uniform(self, n: int) -> npt.NDArray[np.float64]:
        """``n`` i.i.d. uniforms on the open interval (0, 1), 53 random bits each."""
        words = np.frombuffer(self.random_bytes(8 * n), dtype="<u8")
        return ((words >> np.uint64(11)).astype(np.float64) + 0.5) * _TWO_POW_MINUS_53

    def standard_normal(self, n: int) -> npt.NDArray[np.float64]:
        """``n`` i.i.d. N(0, 1) samples by Box–Muller (one sample per uniform)."""
        pairs = (n + 1) // 2
        u = self.uniform(2 * pairs).reshape(2, pairs)
        radius = np.sqrt(-2.0 * np.log(u[0]))
        angle = (2.0 * math.pi) * u[1]
        return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]

    def gaussian_noise(
        self, std: float, shape: tuple[int, ...]
    ) -> npt.NDArray[np.float64]:
        """N(0, std²) noise of ``shape``: the sum of 4 N(0, std²) draws, halved."""
        if not (math.isfinite(std) and std >= 0):
            raise ValueError(f"std must be finite and >= 0; found {std!r}")
        n = math.prod(shape)
        four = self.standard_normal(4 * n).reshape(4, n)
        noise: npt.NDArray[np.float64] = four.sum(axis=0) * (0.5 * std)
        return noise.reshape(shape)

    def bernoulli(self, n: int, p: float) -> npt.NDArray[np.bool_]:
        """``n`` independent draws that are True with probability ``p``."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1]; found {p!r}")
        mask: npt.NDArray[np.bool_] = self.uniform(n) < p
        return mask
