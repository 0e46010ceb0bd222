"""The ring widths the protocol accepts, apart from the ring arithmetic.

Kept free of numpy and torch so that reading a configuration
(:class:`secagg.SecAggSettings`, :class:`secagg.SecAggConfig`) stays cheap.
"""

from __future__ import annotations

__all__ = ["MAX_RING_BITS", "MIN_RING_BITS"]

#: Narrowest ring the protocol accepts.
MIN_RING_BITS = 8
#: Widest ring Z_2^k: an int64 lane holds the sum or difference of two
#: reduced values without overflow, and uint64 containers hold every residue.
MAX_RING_BITS = 62
