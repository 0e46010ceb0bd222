"""What a client checks in the lists the server sends it.

Pure functions of the client's own view (its id, configuration, policy and
what it saw in earlier rounds) and of the received lists: each raises a named
:class:`~secagg.errors.ProtocolError` and changes nothing, so the client's
phase machine (:mod:`secagg.client`) calls them before it commits anything.
:class:`Neighbourhood` answers "who are my neighbours, and are enough of them
present" the same way in every round: from the session id (semi-honest
SecAgg+), the cohort (complete graph), or the consortium roster with the
declared-dropout bound of :mod:`secagg.threat` (hardened SecAgg+).
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass

from secagg import pubkeys
from secagg.config import SecAggConfig, neighbours
from secagg.errors import InvalidKey, ProtocolError, TooFewSurvivors
from secagg.messages import KeyEntry
from secagg.policy import ClientPolicy
from secagg.threat import RosterGraph

__all__ = ["Neighbourhood", "check_directory", "check_lists"]


@dataclass(frozen=True, slots=True)
class Neighbourhood:
    """One client's neighbours in one session, computed locally."""

    config: SecAggConfig
    policy: ClientPolicy
    me: int
    graph: RosterGraph | None = None  # hardened SecAgg+ only
    roster_size: int | None = None

    def peers(self, session: bytes, entries: Mapping[int, KeyEntry]) -> frozenset[int]:
        """The advertisers this client shares with and masks against; never
        a list taken from the server."""
        if self.graph is None:
            return neighbours(self.config, session, self.me, entries)
        peers = self.graph.neighbours(self.me) & set(entries)
        self.check(peers, "advertised keys")
        return peers

    def check(self, present: Set[int], what: str) -> None:
        """Hardened SecAgg+: at most D neighbours missing and t holders left
        (listed clients beyond the neighbourhood are unverifiable here)."""
        if self.graph is None or self.roster_size is None:
            return
        cfg, mine = self.config, self.graph.neighbours(self.me)
        self.policy.check_neighbourhood(cfg, self.roster_size, len(mine - present))
        if len(mine & present) + 1 < cfg.threshold:
            raise TooFewSurvivors(
                f"only {len(mine & present) + 1} of this client's share holders "
                f"{what}; threshold is {cfg.threshold}"
            )

    def holders(self, owner: int, participants: frozenset[int]) -> frozenset[int]:
        """Who holds shares of ``owner``'s secrets in a hardened session: the
        cohort on the complete graph, the owner's closed roster
        neighbourhood in SecAgg+."""
        if self.graph is None:
            return participants
        return self.graph.closed(owner)


def check_directory(
    config: SecAggConfig,
    policy: ClientPolicy,
    me: int,
    entries: Mapping[int, KeyEntry],
    own_keys: tuple[bytes, bytes],
) -> None:
    """The key directory (U1): within the cohort, at least ``threshold``
    entries, this client's own ``(c_pk, s_pk)`` exactly once, every key
    canonical, of large order and distinct, and no more missing clients
    than ``policy`` allows."""
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
    for e in entries.values():
        # Canonical encodings only, so distinct bytes are distinct keys, and
        # no low-order key that would make every exchange fail.
        pubkeys.check_public_key(e.c_pk, e.client_id, "c_pk")
        pubkeys.check_public_key(e.s_pk, e.client_id, "s_pk")
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
