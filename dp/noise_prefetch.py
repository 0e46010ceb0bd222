"""A round's DP noise drawn on a background thread, off the training's critical path.

DP-SGD's Gaussian noise does not depend on the data, so it can be drawn
before the step that adds it.  :class:`PrefetchedNoise` fills one float32
array per (step, parameter tensor), in the order the optimizer asks for them,
on a background thread from its own :class:`~dp.noise.SecureRandom` (spawned
from the client's generator, so the noise is as before: CSPRNG, four draws
summed and halved).  It serves two schedules:

* **within a round** (``lookahead`` set): the thread starts with the round
  and stays at most ``lookahead`` arrays ahead of the optimizer, so memory is
  a few steps of noise and, where the machine has a second core, drawing
  overlaps the forward and backward passes;
* **the next round** (``lookahead=None``): the whole of the next round is
  drawn while the client waits for the server, so that round only adds it.
  These rounds share one process-wide memory budget
  (:data:`PREFETCH_MAX_BYTES`, see :func:`reserve_prefetch`).

Each array is handed out exactly once and then dropped, so no noise is ever
reused; a round that does not consume its arrays (a crash, a rebuilt model)
:meth:`~PrefetchedNoise.cancel`\\ s them.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from dp.errors import PrivacyError
from dp.noise import SecureRandom

__all__ = ["PREFETCH_MAX_BYTES", "PrefetchedNoise", "reserve_prefetch"]

#: Memory all next-round noise drawn ahead in one process may hold at once
#: (steps × parameters × 4 bytes, summed over the clients in the process).
PREFETCH_MAX_BYTES = 256 << 20

_reserved_lock = threading.Lock()
_reserved = 0


def reserve_prefetch(nbytes: int) -> bool:
    """Claim ``nbytes`` of the process-wide budget; False (nothing claimed) if full."""
    global _reserved
    with _reserved_lock:
        if _reserved + nbytes > PREFETCH_MAX_BYTES:
            return False
        _reserved += nbytes
        return True


def _release_prefetch(nbytes: int) -> None:
    global _reserved
    with _reserved_lock:
        _reserved -= nbytes


class PrefetchedNoise:
    """One round's noise: ``steps`` draws of every shape in ``shapes``, in order.

    ``reserved`` is what the caller claimed with :func:`reserve_prefetch` for
    it; it is given back once every array is handed out or the round is
    cancelled.
    """

    def __init__(
        self,
        rng: SecureRandom,
        *,
        std: float,
        shapes: Sequence[tuple[int, ...]],
        steps: int,
        lookahead: int | None = None,
        reserved: int = 0,
    ) -> None:
        if lookahead is not None and lookahead < 1:
            raise PrivacyError(f"lookahead must be >= 1 or None; found {lookahead}")
        self.std = float(std)
        self._order = [tuple(s) for _ in range(steps) for s in shapes]
        self._arrays: list[npt.NDArray[np.float32] | None] = [None] * len(self._order)
        self._lookahead = lookahead
        # Given back once: when the round is used up or cancelled, or when
        # this object is collected (a client dropped with a round drawn ahead).
        self._give_back = weakref.finalize(self, _release_prefetch, reserved)
        self._next = 0
        self._done = 0
        self._cancelled = False
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

    def _may_draw(self, i: int) -> bool:
        """Wait until draw ``i`` is within the lookahead; False once cancelled."""
        with self._cond:
            while (
                not self._cancelled
                and self._lookahead is not None
                and i - self._next >= self._lookahead
            ):
                self._cond.wait()
            return not self._cancelled

    def _fill(self, rng: SecureRandom) -> None:
        try:
            for i, shape in enumerate(self._order):
                if not self._may_draw(i):
                    return
                arr = np.empty(shape, dtype=np.float32)
                rng.gaussian_noise_into(self.std, arr)
                with self._cond:
                    if self._cancelled:  # drawn too late: dropped, never stored
                        return
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
        return (
            not self._cancelled
            and self._next == 0
            and std == self.std
            and order == self._order
        )

    @property
    def remaining(self) -> int:
        """Arrays not handed out yet."""
        return len(self._order) - self._next

    def wait(self) -> None:
        """Block until every array has been drawn (or the round was cancelled)."""
        self._thread.join()

    def cancel(self) -> None:
        """Stop drawing and drop every array not handed out yet (idempotent)."""
        with self._cond:
            self._cancelled = True
            self._arrays = [None] * len(self._order)
            self._cond.notify_all()
        self._give_back()

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
            while self._done <= i and self._error is None and not self._cancelled:
                self._cond.wait()
            if self._cancelled:
                raise PrivacyError("prefetched noise was cancelled")
            if self._done <= i:
                raise PrivacyError(f"noise prefetch failed: {self._error}")
            arr = self._arrays[i]
            self._arrays[i] = None  # handed out once, never again
            self._next = i + 1
            self._cond.notify_all()  # the drawing thread may go one further
        if self._next == len(self._order):
            self._give_back()
        assert arr is not None
        return arr
