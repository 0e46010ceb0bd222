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
* **Gaussians.** Marsaglia's polar method on pairs of those uniforms, in
  float64: a pair (x, y) uniform on (−1, 1)² is kept when 0 < s = x² + y² < 1
  (probability π/4) and gives the two independent N(0, 1) samples
  x·√(−2 ln s / s) and y·√(−2 ln s / s).  It is exact like Box–Muller but
  needs no sin/cos, which dominated the cost (numpy's float64 trig is not
  vectorised); keystream is encrypted in fixed-size blocks from one reused
  zero buffer straight into the output array, with no per-call allocation.
* **Floating-point attack defence.** A single Box–Muller float output reveals
  more than its distribution suggests: the set of values it can take is sparse
  and structured, so ``signal + noise`` can betray ``signal`` (Mironov 2012;
  Holohan & Braghin 2021, arXiv 2107.10138, who show it for both the
  Box–Muller and the polar method; the Opacus-specific attack is
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
_TWO_POW_MINUS_52 = 2.0**-52
#: 64-bit words of keystream encrypted per cipher call (4 MiB).
_BLOCK_WORDS = 1 << 19
#: Read-only plaintext shared by every generator: the keystream is ChaCha20(0).
_ZEROS = bytes(8 * _BLOCK_WORDS)


class ChaCha20Random:
    """Cryptographically secure uniforms, Gaussians and Bernoulli draws.

    Build with ``ChaCha20Random()`` (key from ``os.urandom``).  Tests that need
    reproducible output use :meth:`insecure_from_key_for_testing`, which warns.
    """

    __slots__ = ("_bytes_under_key", "_stream")

    def __init__(self) -> None:
        self._init(os.urandom(_KEY_BYTES))

    def _init(self, key: bytes) -> None:
        self._stream = self._cipher(key)
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
        rng._init(key)
        return rng

    @staticmethod
    def _cipher(key: bytes) -> CipherContext:
        # The key is fresh for every stream, so a fixed all-zero nonce (and
        # initial counter) never repeats a (key, nonce) pair.
        return Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()

    def _reserve(self, n: int) -> None:
        """Account for ``n`` bytes about to be drawn; re-key first if needed."""
        if self._bytes_under_key + n > REKEY_BYTES:
            new_key = self._stream.update(bytes(_KEY_BYTES))
            self._stream = self._cipher(new_key)
            self._bytes_under_key = 0
        self._bytes_under_key += n

    def random_bytes(self, n: int) -> bytes:
        """``n`` keystream bytes."""
        if n < 0:
            raise ValueError(f"n must be >= 0; found {n}")
        self._reserve(n)
        return self._stream.update(bytes(n))

    def _words(self, n: int) -> npt.NDArray[np.uint64]:
        """``n`` keystream words, encrypted block by block straight into place."""
        words = np.empty(n, dtype="<u8")
        raw = words.data.cast("B")
        zeros = memoryview(_ZEROS)
        for start in range(0, 8 * n, 8 * _BLOCK_WORDS):
            nbytes = min(8 * _BLOCK_WORDS, 8 * n - start)
            self._reserve(nbytes)
            self._stream.update_into(zeros[:nbytes], raw[start : start + nbytes])
        return words

    def _grid(self, n: int) -> npt.NDArray[np.float64]:
        """``n`` integers k + 1/2 with k uniform in [0, 2⁵³), as float64."""
        words = self._words(n)
        np.right_shift(words, np.uint64(11), out=words)
        grid = words.astype(np.float64)
        grid += 0.5
        return grid

    def uniform(self, n: int) -> npt.NDArray[np.float64]:
        """``n`` i.i.d. uniforms on the open interval (0, 1), 53 random bits each."""
        u = self._grid(n)
        u *= _TWO_POW_MINUS_53
        return u

    def standard_normal(self, n: int) -> npt.NDArray[np.float64]:
        """``n`` i.i.d. N(0, 1) samples by the polar method (see the module doc)."""
        if n < 0:
            raise ValueError(f"n must be >= 0; found {n}")
        out = np.empty(n, dtype=np.float64)
        filled = 0
        while filled < n:
            pairs = (n - filled + 1) // 2
            # π/4 of pairs are kept; draw ~5 % more than expected needed.
            tries = int(pairs * 1.34) + 64
            xy = self._grid(2 * tries)
            # x = 2u − 1 on the grid (2k + 1)·2⁻⁵³ − 1: odd numerators, so
            # never exactly 0 and s > 0 always; the check below is belt and braces.
            xy *= _TWO_POW_MINUS_52
            xy -= 1.0
            x, y = xy[:tries], xy[tries:]
            s = x * x
            s += y * y
            # Compact once by index: np.take is several times faster than
            # boolean-mask indexing of three arrays.
            kept = np.flatnonzero((s < 1.0) & (s > 0.0))
            s = s.take(kept)
            factor = np.log(s)
            factor *= -2.0
            factor /= s
            np.sqrt(factor, out=factor)
            got = kept.size
            take = min(2 * got, n - filled)
            first = min(got, take)
            rest = take - first
            dest = out[filled : filled + take]
            np.multiply(x.take(kept[:first]), factor[:first], out=dest[:first])
            np.multiply(y.take(kept[:rest]), factor[:rest], out=dest[first:])
            filled += take
        return out

    def gaussian_noise(
        self, std: float, shape: tuple[int, ...]
    ) -> npt.NDArray[np.float64]:
        """N(0, std²) noise of ``shape``: the sum of 4 N(0, std²) draws, halved."""
        if not (math.isfinite(std) and std >= 0):
            raise ValueError(f"std must be finite and >= 0; found {std!r}")
        n = math.prod(shape)
        four = self.standard_normal(4 * n).reshape(4, n)
        noise = four[0] + four[1]
        noise += four[2]
        noise += four[3]
        noise *= 0.5 * std
        shaped: npt.NDArray[np.float64] = noise.reshape(shape)
        return shaped

    def bernoulli(self, n: int, p: float) -> npt.NDArray[np.bool_]:
        """``n`` independent draws that are True with probability ``p``."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1]; found {p!r}")
        mask: npt.NDArray[np.bool_] = self.uniform(n) < p
        return mask
