"""What a client checks in the lists the server sends it.

Pure functions of the client's own view (its id, configuration, policy and
what it saw in earlier rounds) and of the received lists: each raises a named
:class:`~secagg.errors.ProtocolError` and changes nothing, so the client's
phase machine (:mod:`secagg.client`) calls them before it commits anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from secagg.config import SecAggConfig
from secagg.errors import InvalidKey, ProtocolError, TooFewSurvivors
from secagg.messages import KeyEntry
from secagg.policy import ClientPolicy

__all__ = ["check_directory", "check_lists"]


def check_directory(
    config: SecAggConfig,
    policy: ClientPolicy,
    me: int,
    entries: Mapping[int, KeyEntry],
    own_keys: tuple[bytes, bytes],
) -> None:
    """The key directory (U1): within the cohort, at least ``threshold``
    entries, this client's own ``(c_pk, s_pk)`` exactly once, every key
    distinct, and no more missing clients than ``policy`` allows."""
    if len(entries) > config.num_clients:
        raise ProtocolError(
            f"key directory lists {len(entries)} clients, more than the "
            f"announced cohort of {config.num_clients}"
        )
    if len(entries) < config.threshold:
        raise TooFewSurvivors(
            f"only {len(entries)} clients advertised keys; threshold is "
            f"{config.threshold}"
        )
    mine = entries.get(me)
    if mine is None:
        raise InvalidKey("own keys are missing from the key directory")
    if (mine.c_pk, mine.s_pk) != own_keys:
        raise InvalidKey("own entry in the key directory has other keys")
    all_keys = [k for e in entries.values() for k in (e.c_pk, e.s_pk)]
    if len(set(all_keys)) != len(all_keys):
        raise InvalidKey("advertised public keys are not all distinct")
    policy.check_dropouts(config, len(entries))


def check_lists(
    config: SecAggConfig,
    policy: ClientPolicy,
    me: int,
    survivors: Set[int],
    dropped: Set[int],
    *,
    participants: Set[int],
    neighbours: Set[int],
    sharers: Set[int],
) -> None:
    """A survivor list (U3) and dropped list: disjoint, this client a
    survivor, only ``participants`` (U1) listed, every listed neighbour among
    the ``sharers`` that sent it shares, at least ``threshold`` survivors,
    and no more missing clients than ``policy`` allows."""
    if survivors & dropped:
        raise ProtocolError(
            f"survivor and dropped lists overlap: {sorted(survivors & dropped)}"
        )
    if me in dropped:
        raise ProtocolError("this client is listed as dropped")
    if me not in survivors:
        raise ProtocolError("this client is missing from the survivor list")
    unknown = (survivors | dropped) - participants
    if unknown:
        raise ProtocolError(
            f"Unmasking request lists clients that never advertised keys: "
            f"{sorted(unknown)}"
        )
    silent = ((survivors | dropped) & neighbours) - sharers
    if silent:
        raise ProtocolError(
            "Unmasking request lists neighbours that never shared keys "
            f"with this client: {sorted(silent)}"
        )
    if len(survivors) < config.threshold:
        raise TooFewSurvivors(
            f"only {len(survivors)} survivors; threshold is {config.threshold}"
        )
    policy.check_dropouts(config, len(survivors))
