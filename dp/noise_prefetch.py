"""A round's DP noise drawn ahead of time, off the training's critical path.

DP-SGD's Gaussian noise does not depend on the data, so a client can draw the
noise for its next round while it waits for the server, and its next round
then only adds it.  :class:`PrefetchedNoise` fills one float32 array per
(step, parameter tensor) on a background thread from its own
:class:`~dp.noise.SecureRandom` (spawned from the client's generator, so the
noise is as before: CSPRNG, four draws summed and halved).  Each array is
handed out exactly once and then dropped, so no noise is ever reused; a round
that does not consume its arrays (a crash, a rebuilt model) discards them.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from dp.errors import PrivacyError
from dp.noise import SecureRandom

__all__ = ["PREFETCH_MAX_BYTES", "PrefetchedNoise"]

#: Largest round of noise drawn ahead (steps × parameters × 4 bytes).
PREFETCH_MAX_BYTES = 256 << 20


class PrefetchedNoise:
    """One round's noise: ``steps`` draws of every shape in ``shapes``, in order."""

    def __init__(
        self,
        rng: SecureRandom,
        *,
        std: float,
        shapes: Sequence[tuple[int, ...]],
        steps: int,
    ) -> None:
        self.std = float(std)
        self._order = [tuple(s) for _ in range(steps) for s in shapes]
        self._arrays: list[npt.NDArray[np.float32] | None] = [None] * len(self._order)
        self._next = 0
        self._done = 0
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(
            target=self._fill, args=(rng,), name="dp-noise-prefetch", daemon=True
        )
        self._thread.start()

    @staticmethod
    def nbytes(shapes: Sequence[tuple[int, ...]], steps: int) -> int:
        """Memory a round of prefetched float32 noise takes."""
        return 4 * steps * sum(math.prod(s) for s in shapes)

    def _fill(self, rng: SecureRandom) -> None:
        try:
            for i, shape in enumerate(self._order):
                arr = np.empty(shape, dtype=np.float32)
                rng.gaussian_noise_into(self.std, arr)
                with self._cond:
                    self._arrays[i] = arr
                    self._done = i + 1
                    self._cond.notify_all()
        except BaseException as exc:  # reported to the consumer, never lost
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def fits(
        self, *, std: float, shapes: Sequence[tuple[int, ...]], steps: int
    ) -> bool:
        """Whether this is an untouched round of exactly these draws."""
        order = [tuple(s) for _ in range(steps) for s in shapes]
        return self._next == 0 and std == self.std and order == self._order

    @property
    def remaining(self) -> int:
        """Arrays not handed out yet."""
        return len(self._order) - self._next

    def wait(self) -> None:
        """Block until every array has been drawn."""
        self._thread.join()

    def take(self, shape: tuple[int, ...], std: float) -> npt.NDArray[np.float32]:
        """The next array, which must have ``shape`` and have been drawn at ``std``."""
        i = self._next
        if i >= len(self._order) or self._order[i] != tuple(shape) or std != self.std:
            want = self._order[i] if i < len(self._order) else "nothing"
            raise PrivacyError(
                f"prefetched noise out of step: draw {i} wants {want} at std "
                f"{self.std!r}; asked for {tuple(shape)} at std {std!r}"
            )
        with self._cond:
            while self._done <= i and self._error is None:
                self._cond.wait()
            if self._done <= i:
                raise PrivacyError(f"noise prefetch failed: {self._error}")
            arr = self._arrays[i]
            self._arrays[i] = None  # handed out once, never again
        self._next = i + 1
        assert arr is not None
        return arr
