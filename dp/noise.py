"""CSPRNG-backed randomness for DP-SGD: Gaussian noise and Poisson sampling.

Opacus's ``secure_mode`` needs ``torchcsprng``, which no longer installs, and
``torch.Generator`` (Philox / Mersenne Twister) is not a cryptographic
generator: its state can be recovered from outputs.  Everything random that
DP-SGD's guarantee rests on comes from :class:`SecureRandom` instead:

* **Keystream.** A stream cipher (pyca ``cryptography``) keyed with 32 bytes
  from ``os.urandom``, encrypting zeros: AES-256-CTR where the CPU has AES
  instructions (AES-NI / ARMv8 AES; several times faster there), ChaCha20
  elsewhere (:class:`Keystream`).  A key is never reused with the same nonce:
  each generator has its own random key, and after ``REKEY_BYTES`` of output it
  replaces its key with the next 32 keystream bytes ("fast key erasure"), long
  before a block counter could wrap (2²⁶ AES blocks, 2²⁴ ChaCha20 blocks).
* **Uniforms.** Each 64-bit little-endian word ``w`` becomes
  ``((w >> 11) + 0.5) · 2⁻⁵³``: all 53 mantissa bits are random and the value
  lies strictly inside (0, 1), so ``log(u)`` never sees 0.
* **Gaussians.** Marsaglia's polar method in float64: a word, read as a signed
  integer, gives ``x = ((w >> 10) | 1) · 2⁻⁵³``, uniform on the odd multiples
  of 2⁻⁵³ in (−1, 1) (53 random bits; never 0).  A pair (x, y) is kept when
  s = x² + y² < 1 (probability π/4) and gives the two independent N(0, 1)
  samples x·√(−2 ln s / s) and y·√(−2 ln s / s).  It is exact like Box–Muller
  but needs no sin/cos.  Work proceeds in chunks of a few thousand pairs so
  that every numpy pass stays in the CPU cache.
* **Floating-point attack defence.** A single Box–Muller or polar float output
  reveals more than its distribution suggests: the set of values it can take
  is sparse and structured, so ``signal + noise`` can betray ``signal``
  (Mironov 2012; Holohan & Braghin 2021, arXiv 2107.10138; the Opacus-specific
  attack is arXiv 2112.05307).  As in Opacus's secure mode we use the
  "2n-sample" fix with n = 2: every output is the sum of four independent
  N(0, σ²) samples, halved, which is exactly N(0, σ²) in distribution but
  raises the attack cost to about 2^(53·3) (arXiv 2107.10138 §5.1).  We prefer
  this over a discrete Gaussian because DP-SGD's analysis (and Opacus's
  accountants) are for the continuous Gaussian, and over a ziggurat because
  its tables add attack surface.
* **Poisson sampling.** Inclusion is ``u < q`` with the same 53-bit uniforms.

>>> rng = SecureRandom.insecure_from_key_for_testing(bytes(32))
>>> rng.gaussian_noise(1.0, (3,)).shape
(3,)
"""

from __future__ import annotations

import enum
import functools
import math
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import (
    Cipher,
    CipherContext,
    algorithms,
    modes,
)

from dp.errors import InvalidNoiseInputError

__all__ = [
    "REKEY_BYTES",
    "ChaCha20Random",
    "Keystream",
    "SecureRandom",
    "cpu_has_aes",
    "default_keystream",
]

#: Bytes of keystream produced under one key before it is replaced.
REKEY_BYTES = 1 << 30

_KEY_BYTES = 32
_TWO_POW_MINUS_53 = 2.0**-53
_TWO_POW_106 = 2.0**106
_TWO_POW_MINUS_106 = 2.0**-106
#: 64-bit words of keystream encrypted per cipher call (4 MiB).
_BLOCK_WORDS = 1 << 19
#: Read-only plaintext shared by every generator: the keystream is E(0).
_ZEROS = bytes(8 * _BLOCK_WORDS)
#: Polar pairs tried per chunk: 4 float64 arrays of this size fit in L2.
_CHUNK_PAIRS = 1 << 15
#: Outputs per chunk of :meth:`SecureRandom.gaussian_noise_into` (4 normals each).
_CHUNK_OUT = 1 << 13


class Keystream(enum.Enum):
    """The stream cipher whose keystream all randomness is read from."""

    AES256_CTR = "aes-256-ctr"
    CHACHA20 = "chacha20"


@functools.cache
def cpu_has_aes() -> bool:
    """Whether this CPU has AES instructions (read from the OS; False if unknown)."""
    if sys.platform == "darwin":
        # Every Apple-silicon Mac has the ARMv8 crypto extensions; Intel Macs
        # from 2010 on have AES-NI.
        return True
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return "aes" in value.split()
    return False


def default_keystream() -> Keystream:
    """AES-256-CTR where the CPU has AES instructions, ChaCha20 elsewhere."""
    return Keystream.AES256_CTR if cpu_has_aes() else Keystream.CHACHA20


def _encryptor(keystream: Keystream, key: bytes) -> CipherContext:
    # The key is fresh for every stream, so a fixed all-zero nonce (and
    # initial counter) never repeats a (key, nonce) pair.
    if keystream is Keystream.AES256_CTR:
        return Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    return Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()


class _PolarScratch:
    """Buffers for one polar chunk of up to ``pairs`` pairs, reused across calls."""

    __slots__ = ("factor", "kept_s", "mask", "s", "tmp", "words", "xy")

    def __init__(self, pairs: int) -> None:
        self.words = np.empty(2 * pairs, dtype="<u8")
        self.xy = np.empty(2 * pairs, dtype=np.float64)
        self.s = np.empty(pairs, dtype=np.float64)
        self.tmp = np.empty(pairs, dtype=np.float64)
        self.mask = np.empty(pairs, dtype=np.bool_)
        self.kept_s = np.empty(pairs, dtype=np.float64)
        self.factor = np.empty(pairs, dtype=np.float64)


_R = TypeVar("_R", bound="SecureRandom")


class SecureRandom:
    """Cryptographically secure uniforms, Gaussians and Bernoulli draws.

    Build with ``SecureRandom()`` (key from ``os.urandom``, cipher from
    :func:`default_keystream`).  Threads may share one: each draw holds its
    lock, so draws run one at a time; to draw in parallel, :meth:`spawn` one
    generator per thread.  Tests that need reproducible output use
    :meth:`insecure_from_key_for_testing`, which warns.
    """

    __slots__ = ("_bytes_under_key", "_lock", "_scratch", "_stream", "keystream")

    def __init__(self, keystream: Keystream | None = None) -> None:
        self._init(os.urandom(_KEY_BYTES), keystream)

    def _init(self, key: bytes, keystream: Keystream | None) -> None:
        if keystream is None:
            keystream = default_keystream()
        if not isinstance(keystream, Keystream):
            raise InvalidNoiseInputError(
                "keystream must be a Keystream "
                f"({', '.join(k.name for k in Keystream)}); found {keystream!r}"
            )
        self.keystream = keystream
        self._stream = _encryptor(keystream, key)
        self._bytes_under_key = 0
        self._scratch: _PolarScratch | None = None
        # One draw at a time: the cipher state and the scratch buffers are
        # shared by every call, and interleaved draws would corrupt both.
        self._lock = threading.Lock()

    @classmethod
    def insecure_from_key_for_testing(
        cls: type[_R], key: bytes, keystream: Keystream | None = None
    ) -> _R:
        """A generator with a caller-chosen key.  Never use outside tests."""
        if len(key) != _KEY_BYTES:
            raise InvalidNoiseInputError(
                f"key must be {_KEY_BYTES} bytes; found {len(key)}"
            )
        warnings.warn(
            f"{cls.__name__} with a fixed key is deterministic: test use only",
            RuntimeWarning,
            stacklevel=2,
        )
        rng = cls.__new__(cls)
        rng._init(key, keystream)
        return rng

    def spawn(self: _R) -> _R:
        """A new generator of the same kind keyed by the next 32 bytes of this stream.

        Those bytes are never output, so the child's stream is independent of
        everything this generator produces afterwards: noise can be drawn on
        another thread, deterministically for a given parent key.
        """
        child = type(self).__new__(type(self))
        child._init(self.random_bytes(_KEY_BYTES), self.keystream)
        return child

    def _reserve(self, n: int) -> None:
        """Account for ``n`` bytes about to be drawn; re-key first if needed."""
        if self._bytes_under_key + n > REKEY_BYTES:
            new_key = self._stream.update(bytes(_KEY_BYTES))
            self._stream = _encryptor(self.keystream, new_key)
            self._bytes_under_key = 0
        self._bytes_under_key += n

    def random_bytes(self, n: int) -> bytes:
        """``n`` keystream bytes."""
        if n < 0:
            raise InvalidNoiseInputError(f"n must be >= 0; found {n}")
        with self._lock:
            self._reserve(n)
            return self._stream.update(bytes(n))

    def _words_into(self, words: npt.NDArray[np.uint64]) -> None:
        """Fill the contiguous ``words`` with keystream, encrypted in place."""
        raw = words.data.cast("B")
        total = 8 * words.size
        zeros = memoryview(_ZEROS)
        for start in range(0, total, 8 * _BLOCK_WORDS):
            nbytes = min(8 * _BLOCK_WORDS, total - start)
            self._reserve(nbytes)
            self._stream.update_into(zeros[:nbytes], raw[start : start + nbytes])

    def _words(self, n: int) -> npt.NDArray[np.uint64]:
        """``n`` keystream words."""
        words = np.empty(n, dtype="<u8")
        self._words_into(words)
        return words

    def uniform(self, n: int) -> npt.NDArray[np.float64]:
        """``n`` i.i.d. uniforms on the open interval (0, 1), 53 random bits each."""
        with self._lock:
            words = self._words(n)
        np.right_shift(words, np.uint64(11), out=words)
        u = words.astype(np.float64)
        u += 0.5
        u *= _TWO_POW_MINUS_53
        return u

    def _scratch_for(self) -> _PolarScratch:
        # Reused across chunks and calls: fresh temporaries of this size are
        # served by mmap, and their page faults cost more than the arithmetic.
        if self._scratch is None:
            self._scratch = _PolarScratch(_CHUNK_PAIRS)
        return self._scratch

    def _polar_chunk(self, dest: npt.NDArray[np.float64], pairs: int) -> int:
        """Try ``pairs`` polar pairs; write up to ``dest.size`` values; count them.

        The values are 2⁵³ · N(0, 1): the polar method run on the integers
        X = 2⁵³x and Y = 2⁵³y.  Scaling by a power of two commutes with every
        float64 rounding here (nothing overflows or goes subnormal), so each
        value is bit for bit 2⁵³ times the textbook x·√(−2 ln s / s), and
        callers fold the 2⁻⁵³ into a multiplication they make anyway.
        """
        sc = self._scratch_for()
        w = sc.words[: 2 * pairs]
        self._words_into(w)
        wi = w.view(np.int64)
        # Arithmetic shift keeps the sign: odd integers in (−2⁵³, 2⁵³), exact
        # in float64, so X and Y are never 0 and S > 0 always.
        np.right_shift(wi, 10, out=wi)
        np.bitwise_or(wi, 1, out=wi)
        xy = sc.xy[: 2 * pairs]
        np.copyto(xy, wi, casting="unsafe")
        x, y = xy[:pairs], xy[pairs:]
        big_s, tmp = sc.s[:pairs], sc.tmp[:pairs]
        np.multiply(x, x, out=big_s)
        np.multiply(y, y, out=tmp)
        big_s += tmp
        np.less(big_s, _TWO_POW_106, out=sc.mask[:pairs])
        # Compact once by index: np.take is several times faster than
        # boolean-mask indexing of three arrays.
        kept = np.flatnonzero(sc.mask[:pairs])
        k = kept.size
        s = np.take(big_s, kept, out=sc.kept_s[:k])
        s *= _TWO_POW_MINUS_106  # exact: s = x² + y² < 1
        factor = sc.factor[:k]
        np.log(s, out=factor)
        factor *= -2.0
        factor /= s
        np.sqrt(factor, out=factor)
        take = min(2 * k, dest.size)
        first = min(k, take)
        rest = take - first
        gathered = sc.tmp[:first]
        np.take(x, kept[:first], out=gathered)
        np.multiply(gathered, factor[:first], out=dest[:first])
        gathered = sc.tmp[:rest]
        np.take(y, kept[:rest], out=gathered)
        np.multiply(gathered, factor[:rest], out=dest[first:take])
        return take

    def _scaled_normals_into(self, dest: npt.NDArray[np.float64]) -> None:
        """Fill the contiguous float64 ``dest`` with i.i.d. 2⁵³ · N(0, 1)."""
        n = dest.size
        filled = 0
        while filled < n:
            # π/4 of pairs are kept; try ~5 % more than expected to be needed.
            pairs = min(int((n - filled + 1) // 2 * 1.34) + 16, _CHUNK_PAIRS)
            filled += self._polar_chunk(dest[filled:], pairs)

    def standard_normal(self, n: int) -> npt.NDArray[np.float64]:
        """``n`` i.i.d. N(0, 1) samples by the polar method (see the module doc)."""
        if n < 0:
            raise InvalidNoiseInputError(f"n must be >= 0; found {n}")
        out = np.empty(n, dtype=np.float64)
        with self._lock:
            self._scaled_normals_into(out)
        out *= _TWO_POW_MINUS_53
        return out

    def gaussian_noise_into(self, std: float, out: npt.NDArray[np.floating]) -> None:
        """Overwrite the contiguous float array ``out`` with N(0, std²) noise.

        Each value is the sum of 4 float64 N(0, std²) draws, halved, then
        rounded once to ``out``'s dtype.  The stream is consumed exactly as by
        :meth:`gaussian_noise` of the same size.
        """
        if not (math.isfinite(std) and std >= 0):
            raise InvalidNoiseInputError(f"std must be finite and >= 0; found {std!r}")
        if not out.flags.c_contiguous:
            raise InvalidNoiseInputError("out must be a C-contiguous array")
        flat = out.reshape(-1)
        n = flat.size
        # 2⁻⁵³ undoes the scaled normals' factor; exact, as is the halving.
        scale = 0.5 * std * _TWO_POW_MINUS_53
        buf = np.empty(4 * min(n, _CHUNK_OUT), dtype=np.float64)
        with self._lock:
            self._noise_chunks(scale, flat, buf)

    def _noise_chunks(
        self,
        scale: float,
        flat: npt.NDArray[np.floating],
        buf: npt.NDArray[np.float64],
    ) -> None:
        n = flat.size
        for start in range(0, n, _CHUNK_OUT):
            m = min(_CHUNK_OUT, n - start)
            four = buf[: 4 * m].reshape(4, m)
            self._scaled_normals_into(buf[: 4 * m])
            acc = four[0]
            acc += four[1]
            acc += four[2]
            acc += four[3]
            # Multiplied in float64 and rounded once to out's dtype.
            np.multiply(acc, scale, out=flat[start : start + m], casting="same_kind")

    def gaussian_noise(
        self, std: float, shape: tuple[int, ...]
    ) -> npt.NDArray[np.float64]:
        """float64 N(0, std²) noise of ``shape``: the sum of 4 draws, halved."""
        out = np.empty(shape, dtype=np.float64)
        self.gaussian_noise_into(std, out)
        return out

    def bernoulli(self, n: int, p: float) -> npt.NDArray[np.bool_]:
        """``n`` independent draws that are True with probability ``p``."""
        if not 0.0 <= p <= 1.0:
            raise InvalidNoiseInputError(f"p must be in [0, 1]; found {p!r}")
        mask: npt.NDArray[np.bool_] = self.uniform(n) < p
        return mask


class ChaCha20Random(SecureRandom):
    """A :class:`SecureRandom` that always uses the ChaCha20 keystream."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(Keystream.CHACHA20)

    def _init(self, key: bytes, keystream: Keystream | None) -> None:
        super()._init(key, Keystream.CHACHA20)
