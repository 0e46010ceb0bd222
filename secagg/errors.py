"""The one exception tree of :mod:`secagg`.

Every failure the package raises on purpose derives from :class:`SecAggError`.
A failed check never returns a flag: it raises, and the party that raised it
has released nothing and changed no state.
"""

from __future__ import annotations

__all__ = [
    "AlreadyContributed",
    "BackendUnavailable",
    "CheatingError",
    "ConfigError",
    "ConsistencyError",
    "GraphParameterError",
    "InvalidInput",
    "InvalidKey",
    "InvalidMessage",
    "InvalidShare",
    "InvalidSignature",
    "PolicyViolation",
    "ProtocolError",
    "ReconstructionError",
    "ReplayedSession",
    "SecAggError",
    "TooFewSurvivors",
    "UnknownIdentity",
]


class SecAggError(Exception):
    """Base class of every error raised by :mod:`secagg`."""


class ConfigError(SecAggError, ValueError):
    """A configuration is invalid or could overflow the ring."""


class BackendUnavailable(ConfigError):  # noqa: N818 (named like its siblings)
    """The ring back end or kernel asked for cannot run on this machine
    (no Triton, no CUDA device)."""


class GraphParameterError(ConfigError):
    """Graph parameters are invalid or no secure and correct (k, t) exists.

    A :class:`ConfigError` (hence also a ``ValueError``), so one handler
    catches every refused session parameter.
    """


class InvalidInput(SecAggError, ValueError):  # noqa: N818 (public name)
    """Something the caller passed in is malformed or out of range.

    A client's own vector or weight that cannot be quantised as configured,
    or a bad argument to a primitive (a PRG key, a ring width, a mask sign,
    an output buffer).  Bytes received from a peer raise
    :class:`InvalidMessage` instead.
    """


class InvalidMessage(SecAggError, ValueError):  # noqa: N818 (public name)
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


class PolicyViolation(ProtocolError):  # noqa: N818 (public name)
    """The session configuration is outside the client's own policy."""


class InvalidKey(ProtocolError):  # noqa: N818 (public name)
    """Advertised public keys are duplicated, missing, or of low order."""


class InvalidShare(ProtocolError):  # noqa: N818 (public name)
    """An encrypted share failed to decrypt or names the wrong parties."""


class TooFewSurvivors(ProtocolError):  # noqa: N818 (public name)
    """Fewer than ``threshold`` clients remain; the session must abort.

    Below the threshold the dropped clients' masks cannot be removed, so no
    sum can be produced and nothing further may be revealed.
    """


class ReconstructionError(ProtocolError):
    """Shares could not be combined into a consistent secret."""


class UnknownIdentity(ProtocolError):  # noqa: N818 (named like its siblings)
    """A client id is not in the consortium's identity registry (a Sybil)."""


class InvalidSignature(ProtocolError):  # noqa: N818 (named like its siblings)
    """An Ed25519 signature does not verify against the signer's identity key.

    Raised for a forged or replayed AdvertiseKeys signature and for a
    ConsistencyCheck signature over another survivor list or session.
    """


class ConsistencyError(ProtocolError):
    """The hardened ConsistencyCheck failed: the Unmasking request carries
    another survivor list than the one this client signed, a signature from a
    non-member of that list, or fewer than ``threshold`` signatures on it
    from the share holders of a peer whose share it would reveal."""


class AlreadyContributed(PolicyViolation):
    """A hardened client was asked for a second contribution to one model.

    Two sums over overlapping cohorts on the same model difference out one
    client's input; the client's durable participation log refuses it.
    """


class ReplayedSession(PolicyViolation):
    """A hardened client was asked to advertise keys for a session nonce it
    has already signed keys for (its advert could be replayed)."""


class CheatingError(ReconstructionError):
    """A party revealed or dealt shares that do not match its commitments.

    ``culprits`` names them; where enough honest shares remain the server
    decodes around them and records them in ``SecAggAggregate.cheaters``.
    """

    def __init__(self, message: str, culprits: frozenset[int]) -> None:
        super().__init__(message)
        self.culprits = culprits
