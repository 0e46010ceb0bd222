"""How the coordinator reaches the nodes: one exchange per protocol stage.

:class:`Transport` is what :class:`~core.flower.coordinator.Coordinator`
needs: the connected nodes, and an exchange that sends one request per node
and returns, by a deadline, the replies that came (a node absent from the
result missed the deadline or failed: a dropout at that stage).

:class:`GridTransport` implements it over Flower's ``Grid``: push every
message, then pull replies every ``poll`` seconds until all have come or the
deadline passes (Flower's own ``send_and_receive`` waits 3 s between pulls).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from flwr.app import ConfigRecord, ConfigRecordValues, Message, RecordDict
from flwr.serverapp import Grid

from core.flower.errors import WireError
from core.flower.protocol import MESSAGE_TYPE, RECORD, StageReply, StageRequest

__all__ = ["GridTransport", "Transport", "decode_reply", "encode_request"]

logger = logging.getLogger(__name__)


class Transport(Protocol):
    """The coordinator's view of the network."""

    def nodes(self) -> list[int]:
        """Ids of the nodes connected now."""
        ...

    def exchange(
        self, requests: Mapping[int, StageRequest], timeout: float
    ) -> dict[int, StageReply | str]:
        """Send each node its request; each node's reply or why it failed.

        Nodes missing from the result did not answer by ``timeout`` seconds.
        """
        ...


def encode_request(request: StageRequest) -> RecordDict:
    """The content of a request message."""
    fields: dict[str, ConfigRecordValues] = dict(request.to_fields())
    return RecordDict({RECORD: ConfigRecord(fields)})


def decode_reply(content: RecordDict) -> StageReply:
    """Decode a reply's content; :class:`WireError` unless it is exactly ours."""
    if set(content.keys()) != {RECORD} or RECORD not in content.config_records:
        raise WireError(f"reply content must be one ConfigRecord named {RECORD!r}")
    return StageReply.from_fields(dict(content.config_records[RECORD]))


class GridTransport:
    """:class:`Transport` over a Flower ``Grid`` (deployment or simulation).

    ``observe`` (for audits and tests) is called with every message pushed
    and every reply pulled, before anything else looks at it.
    """

    def __init__(
        self,
        grid: Grid,
        *,
        poll: float = 0.2,
        observe: Callable[[str, Message], None] | None = None,
    ) -> None:
        self._grid = grid
        self._poll = poll
        self._observe = observe

    def nodes(self) -> list[int]:
        """Ids of the nodes connected now."""
        return sorted(self._grid.get_node_ids())

    def wait_for_nodes(self, count: int, timeout: float) -> list[int]:
        """The connected nodes once ``count`` are (or whatever is, at ``timeout``)."""
        deadline = time.monotonic() + timeout
        nodes = self.nodes()
        while len(nodes) < count and time.monotonic() < deadline:
            time.sleep(1.0)
            nodes = self.nodes()
        return nodes

    def exchange(
        self, requests: Mapping[int, StageRequest], timeout: float
    ) -> dict[int, StageReply | str]:
        """See :meth:`Transport.exchange`."""
        messages = []
        for node, request in requests.items():
            msg = Message(
                encode_request(request),
                dst_node_id=node,
                message_type=MESSAGE_TYPE,
                group_id=str(request.round_index),
                ttl=max(timeout, 1.0) + 30.0,
            )
            if self._observe is not None:
                self._observe("request", msg)
            messages.append(msg)
        pending = {
            mid: msg.metadata.dst_node_id
            for mid, msg in zip(
                self._grid.push_messages(messages), messages, strict=True
            )
        }
        deadline = time.monotonic() + timeout
        out: dict[int, StageReply | str] = {}
        while pending:
            for reply in self._grid.pull_messages(list(pending)):
                dst = pending.get(reply.metadata.reply_to_message_id)
                if dst is None or reply.metadata.src_node_id != dst:
                    continue
                del pending[reply.metadata.reply_to_message_id]
                if self._observe is not None:
                    self._observe("reply", reply)
                out[dst] = self._decode(reply)
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(self._poll)
        return out

    @staticmethod
    def _decode(reply: Message) -> StageReply | str:
        if reply.has_error():
            return f"node error: {reply.error.reason}"
        try:
            return decode_reply(reply.content)
        except WireError as exc:
            return f"malformed reply: {exc}"
