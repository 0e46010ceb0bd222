"""SecAgg+ communication graph: parameter finder and randomly relabelled Harary graph.

SecAgg+ (Bell et al., CCS 2020) replaces the complete graph of Bonawitz et al.
by a k-regular Harary graph H(n, k) whose node labels are a uniformly random
permutation. The degree k and the Shamir threshold t are *computed* from the
cohort size, the assumed fraction of corrupt clients and the expected dropout
fraction (never taken as free parameters), following the procedure of
Google's Federated Compute Platform (``graph_parameter_finder``): statistical
security 2^-40, correctness failure below 2^-20.

The relabelling is derived by every client from the session id with a CSPRNG
(HKDF-SHA256 then ChaCha20 with unbiased rejection sampling), so a neighbour
list sent by the server is never needed.  The session id hashes every listed
key, so the server can steer the graph only through whom it lists.
"""

from __future__ import annotations

import enum
import functools
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.errors import GraphParameterError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "GRAPH_PERMUTATION_LABEL",
    "MAX_BAD_FRACTION",
    "MAX_CLIENTS",
    "GraphParameterError",
    "SecAggPlusParams",
    "ThreatModel",
    "complete_graph_threshold",
    "harary_graph",
    "minimum_threshold",
    "secaggplus_parameters",
]

#: HKDF ``info`` label of the relabelling key; no other key uses it.
GRAPH_PERMUTATION_LABEL = b"fedshield/secagg/v1/graph-permutation"
#: Largest share of bad clients the analysis tolerates: corrupt + dropped
#: (semi-honest) or corrupt + 2 · dropped (semi-malicious, where the server
#: may also lie about dropouts).
MAX_BAD_FRACTION = 0.9
#: Largest cohort the parameter finder accepts (the analysis is validated up to it).
MAX_CLIENTS = 1_000_000

# Security: P[some client's honest-survivor neighbourhood leaks or the graph of
# honest survivors disconnects] < 2^-40, split evenly over the two bad events.
_SECURITY_BITS = 40.0
_CORRECTNESS_BITS = 20.0
# Nudges floor/ceil of rate·n in the conservative direction when rate·n is an
# integer that binary floating point represents a hair too low (0.33·100).
_EPS = 1e-14


class ThreatModel(enum.Enum):
    """Adversary assumed when choosing the graph degree and threshold."""

    #: Honest-but-curious server colluding with a fraction of clients.
    SEMI_HONEST = "semi-honest"
    #: Server may also lie about dropouts (needs 2t > k + corrupt neighbours).
    SEMI_MALICIOUS = "semi-malicious"


@dataclass(frozen=True)
class SecAggPlusParams:
    """Degree of the Harary graph and Shamir threshold for one cohort."""

    degree: int
    threshold: int


def _hypergeom_pmf(total: int, marked: int, draws: int) -> npt.NDArray[np.float64]:
    """P[X = x] for x = 0..draws, X = marked items among ``draws`` of ``total``."""
    import numpy as np
    from scipy.special import gammaln

    lg = math.lgamma
    log_norm = lg(draws + 1) + lg(total - draws + 1) - lg(total + 1)
    log_norm += lg(marked + 1) + lg(total - marked + 1)
    lo = max(0, draws - (total - marked))
    hi = min(draws, marked)
    x = np.arange(lo, hi + 1, dtype=np.float64)
    log_pmf = (
        log_norm
        - gammaln(x + 1)
        - gammaln(marked - x + 1)
        - gammaln(draws - x + 1)
        - gammaln(total - marked - draws + x + 1)
    )
    pmf = np.zeros(draws + 1, dtype=np.float64)
    pmf[lo : hi + 1] = np.exp(log_pmf)
    return pmf


def _upper_quantile(pmf: npt.NDArray[np.float64], q: float) -> int:
    """Smallest x with P[X > x] < q."""
    import numpy as np

    # Sequential cumsum from the far end adds the smallest terms first.
    at_least = np.cumsum(pmf[::-1])[::-1]  # P[X >= x]
    above = np.append(at_least[1:], 0.0)  # P[X > x]
    return int(np.argmax(above < q))


def _lower_quantile(pmf: npt.NDArray[np.float64], q: float) -> int:
    """Smallest x with P[X <= x] >= q."""
    import numpy as np

    cdf = np.cumsum(pmf)
    if not cdf[-1] >= q:  # rounding can leave the total a hair below 1
        return len(pmf) - 1
    return int(np.argmax(cdf >= q))


def _check_rates(n: int, corrupt: float, dropout: float, threat: ThreatModel) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise GraphParameterError(
            f"number of clients must be a positive int, got {n!r}"
        )
    if n > MAX_CLIENTS:
        raise GraphParameterError(f"number of clients {n} exceeds {MAX_CLIENTS}")
    for name, rate in (("corrupt_fraction", corrupt), ("dropout_fraction", dropout)):
        if not (0.0 <= rate < 1.0):
            raise GraphParameterError(f"{name} must be in [0, 1), got {rate!r}")
    if not isinstance(threat, ThreatModel):
        raise GraphParameterError(f"threat must be a ThreatModel, got {threat!r}")
    if threat is ThreatModel.SEMI_HONEST and corrupt + dropout > MAX_BAD_FRACTION:
        raise GraphParameterError(
            "semi-honest SecAgg+ needs corrupt_fraction + dropout_fraction <= "
            f"{MAX_BAD_FRACTION}, got {corrupt} + {dropout}"
        )
    malicious = threat is ThreatModel.SEMI_MALICIOUS
    if malicious and corrupt + 2 * dropout > MAX_BAD_FRACTION:
        raise GraphParameterError(
            "semi-malicious SecAgg+ needs corrupt_fraction + 2*dropout_fraction "
            f"<= {MAX_BAD_FRACTION}, got {corrupt} + 2*{dropout}"
        )


@functools.lru_cache(maxsize=256)
def _security_floor(n: int, max_corrupt: int, k: int, threat: ThreatModel) -> int:
    """The smallest t1 with P[more than t1 of k neighbours corrupt] < 2^-41 / n.

    A threshold above t1 is secure.  Under the semi-malicious model it must
    also exceed half of the k neighbours plus the corrupt ones.
    """
    q_security = 2.0 ** -(_SECURITY_BITS + 1.0) / n
    t1 = _upper_quantile(_hypergeom_pmf(n, max_corrupt, k), q_security)
    if threat is ThreatModel.SEMI_MALICIOUS:
        t1 = math.ceil((t1 + k - 1.25) / 2)
    return t1


def minimum_threshold(
    n: int, degree: int, corrupt_fraction: float, threat: ThreatModel
) -> int:
    """Smallest secure threshold of a degree-``degree`` SecAgg+ graph of ``n``.

    The security half of :func:`secaggplus_parameters`: what a client can
    recompute from the announced (n, degree) and its own assumed corrupt
    fraction, to refuse a threshold the server chose too low.
    """
    _check_rates(n, corrupt_fraction, 0.0, threat)
    if not isinstance(degree, int) or isinstance(degree, bool) or degree < 1:
        raise GraphParameterError(f"degree must be a positive int, got {degree!r}")
    max_corrupt = math.floor((corrupt_fraction + _EPS) * n)
    return max(_security_floor(n, max_corrupt, min(degree, n - 1), threat) + 1, 2)


def secaggplus_parameters(
    n: int, corrupt_fraction: float, dropout_fraction: float, threat: ThreatModel
) -> SecAggPlusParams:
    """Smallest even degree k and its threshold t for a SecAgg+ cohort of ``n``.

    For k = 2, 4, ... (k < n - 1) the degree is accepted when (1) a union bound
    over pairs of "k/2 consecutive bad nodes" gaps on the ring puts the
    probability that the honest survivors' graph disconnects below 2^-41, and
    (2) a threshold t exists with P[#corrupt neighbours >= t] <= 2^-41 / n and
    P[#surviving neighbours < t] < 2^-20 / n (hypergeometric laws). Under the
    semi-malicious model the lower end also needs 2t > k + corrupt neighbours.
    The threshold returned is the smallest admissible one (at least 2).

    Raises :class:`GraphParameterError` for invalid inputs and for combinations
    with no secure and correct (k, t) below the complete graph.
    """
    _check_rates(n, corrupt_fraction, dropout_fraction, threat)
    max_corrupt = math.floor((corrupt_fraction + _EPS) * n)
    max_dropped = math.floor((dropout_fraction + _EPS) * n)
    min_survivors = math.ceil((1.0 - dropout_fraction - _EPS) * n)
    max_bad = max_corrupt + max_dropped
    log_security = -(_SECURITY_BITS + 1.0) * math.log(2.0)
    q_correct = 2.0**-_CORRECTNESS_BITS / n
    lg = math.lgamma

    for k in range(2, n - 1, 2):
        if k <= max_bad:
            # Union bound: n(n-k-1)/2 gap pairs, each needing k of the bad nodes.
            log_p = (
                math.log(n)
                + math.log(n - k - 1)
                - math.log(2.0)
                + lg(max_bad + 1)
                + lg(n - k + 1)
                - lg(n + 1)
                - lg(max_bad - k + 1)
            )
            if log_p >= log_security:
                continue
        t1 = _security_floor(n, max_corrupt, k, threat)
        t2 = _lower_quantile(_hypergeom_pmf(n, min_survivors, k), q_correct)
        if t2 <= t1:
            continue
        return SecAggPlusParams(degree=k, threshold=max(t1 + 1, 2))
    raise GraphParameterError(
        f"no secure SecAgg+ degree below the complete graph for n={n}, "
        f"corrupt={corrupt_fraction}, dropout={dropout_fraction}, {threat.value}; "
        "use the complete graph"
    )


def complete_graph_threshold(
    n: int, corrupt_fraction: float, dropout_fraction: float, threat: ThreatModel
) -> int:
    """Threshold of a complete-graph cohort, as FCP's ``CheckFullGraphParameters``.

    The highest t that ``dropout_fraction`` still lets survive, t = ⌈(1-δ)n⌉,
    provided it exceeds the corrupt clients (semi-honest) or (n + corrupt)/2
    (semi-malicious: at most one survivor list can then gather t clients).
    """
    _check_rates(n, corrupt_fraction, dropout_fraction, threat)
    # Rounded up, as a client's policy counts the corrupt: ⌈α·n⌉.
    corrupt = math.ceil((corrupt_fraction - _EPS) * n)
    floor_t = corrupt if threat is ThreatModel.SEMI_HONEST else (n + corrupt) // 2
    threshold = math.ceil((1.0 - dropout_fraction - _EPS) * n)
    if threshold <= floor_t:
        raise GraphParameterError(
            f"no secure threshold for a complete graph of {n}: survivors "
            f"{threshold} must exceed {floor_t} ({threat.value})"
        )
    return threshold


def _words(key: bytes) -> Iterator[int]:
    """Endless little-endian uint32 words of the ChaCha20 keystream of ``key``."""
    # pyca's 16-byte nonce is the RFC 8439 counter (LE32, from 0) || 96-bit nonce.
    encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    chunk_words = 4096
    zeros = bytes(4 * chunk_words)
    while True:
        yield from struct.unpack(f"<{chunk_words}I", encryptor.update(zeros))


def _permutation(n: int, session_id: bytes) -> list[int]:
    """Uniform permutation of range(n) from the session id (Fisher-Yates)."""
    # n is bound into the key so cohorts of different sizes never share a stream.
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=GRAPH_PERMUTATION_LABEL + n.to_bytes(8, "big"),
    ).derive(session_id)
    words = _words(key)
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        bound = i + 1
        # Reject the top 2^32 mod bound words so every j is equally likely.
        limit = (1 << 32) - ((1 << 32) % bound)
        w = next(words)
        while w >= limit:
            w = next(words)
        j = w % bound
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def harary_graph(n: int, degree: int, session_id: bytes) -> tuple[frozenset[int], ...]:
    """Neighbour sets (self excluded) of clients 0..n-1 in a relabelled H(n, degree).

    Ring position p is linked to positions p ± 1 .. p ± degree/2; client ids are
    assigned to ring positions by a permutation derived from ``session_id``.
    ``degree >= n - 1`` gives the complete graph. Below that the degree must be
    a positive even number. Deterministic in (n, degree, session_id).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise GraphParameterError(f"n must be a positive int, got {n!r}")
    if n >= 1 << 32:
        raise GraphParameterError(f"n must be below 2^32, got {n}")
    if not isinstance(degree, int) or isinstance(degree, bool) or degree < 0:
        raise GraphParameterError(f"degree must be a non-negative int, got {degree!r}")
    if not isinstance(session_id, bytes) or not session_id:
        raise GraphParameterError("session_id must be non-empty bytes")
    if degree >= n - 1:
        everyone = frozenset(range(n))
        return tuple(everyone - {i} for i in range(n))
    if degree == 0 or degree % 2:
        raise GraphParameterError(
            f"a Harary graph below the complete graph needs an even degree >= 2, "
            f"got {degree} for n={n}"
        )
    perm = _permutation(n, session_id)  # ring position -> client id
    half = degree // 2
    neighbours: list[frozenset[int]] = [frozenset()] * n
    for pos in range(n):
        neighbours[perm[pos]] = frozenset(
            perm[(pos + off) % n] for off in range(-half, half + 1) if off
        )
    return tuple(neighbours)
