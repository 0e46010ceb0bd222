"""The one exception tree of :mod:`secagg`.

Every failure the package raises on purpose derives from :class:`SecAggError`.
A failed check never returns a flag: it raises, and the party that raised it
has released nothing and changed no state.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InvalidInput",
    "InvalidKey",
    "InvalidMessage",
    "InvalidShare",
    "PolicyViolation",
    "ProtocolError",
    "ReconstructionError",
    "SecAggError",
    "TooFewSurvivors",
]


class SecAggError(Exception):
    """Base class of every error raised by :mod:`secagg`."""


class ConfigError(SecAggError, ValueError):
    """A configuration is invalid or could overflow the ring."""


class InvalidInput(SecAggError, ValueError):  # noqa: N818 (names fixed by issue 3)
    """A client's own vector or weight cannot be quantised as configured."""


class InvalidMessage(SecAggError, ValueError):  # noqa: N818 (names fixed by issue 3)
    """Bytes received from a peer do not decode to a well-formed message.

    Every parse failure (truncated, extended, wrong version, wrong type,
    out-of-range field) collapses into this one error, so a caller needs a
    single handler and an attacker learns nothing from which check failed.
    """


class ProtocolError(SecAggError):
    """A well-formed message arrived that the protocol does not allow here.

    Examples: a message for the wrong round, a duplicate sender, an Unmasking
    request that lists a client both as survivor and as dropped.
    """


class PolicyViolation(ProtocolError):  # noqa: N818 (names fixed by issue 3)
    """The session configuration is outside the client's own policy."""


class InvalidKey(ProtocolError):  # noqa: N818 (names fixed by issue 3)
    """Advertised public keys are duplicated, missing, or of low order."""


class InvalidShare(ProtocolError):  # noqa: N818 (names fixed by issue 3)
    """An encrypted share failed to decrypt or names the wrong parties."""


class TooFewSurvivors(ProtocolError):  # noqa: N818 (names fixed by issue 3)
    """Fewer than ``threshold`` clients remain; the session must abort.

    Below the threshold the dropped clients' masks cannot be removed, so no
    sum can be produced and nothing further may be revealed.
    """


class ReconstructionError(ProtocolError):
    """Shares could not be combined into a consistent secret."""
