"""The Flower ClientApp: hands each stage to the institution's node agent.

It holds nothing and decides nothing: it decodes the coordinator's request,
hands it to the node's agent, and returns the agent's reply.  A refusal or
failure raises, which Flower turns into an error reply; the coordinator
counts the node as a dropout at that stage.  :func:`make_client_app` takes
the way to reach the agent: in-process agents on the simulation runtime.  A
deployment's ClientApp is the standard-library relay of the example app
(``fedshield_app/relay.py``) in front of the agent's socket
(:mod:`core.flower.agent`), named by the SuperNode's ``--node-config
fedshield-agent=PATH``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from flwr.app import ConfigRecord, ConfigRecordValues, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from core.flower.errors import WireError
from core.flower.protocol import MESSAGE_TYPE, RECORD, StageReply, StageRequest

__all__ = ["AGENT_KEY", "AgentHandle", "decode_request", "make_client_app"]

#: The SuperNode ``--node-config`` key naming the node agent's socket.
AGENT_KEY = "fedshield-agent"


class AgentHandle(Protocol):
    """Whatever answers a stage for this node (socket link or in-process agent)."""

    def request(
        self, run_id: int, request: StageRequest, run_config: Mapping[str, Any]
    ) -> StageReply:
        """Answer one stage."""
        ...


def decode_request(content: RecordDict) -> StageRequest:
    """Decode a request's content; :class:`WireError` unless it is exactly ours."""
    if set(content.keys()) != {RECORD} or RECORD not in content.config_records:
        raise WireError(f"request content must be one ConfigRecord named {RECORD!r}")
    return StageRequest.from_fields(dict(content.config_records[RECORD]))


def make_client_app(
    resolve: Callable[[Context], AgentHandle],
    run_config: Mapping[str, Any] | None = None,
) -> ClientApp:
    """A ClientApp relaying to ``resolve(context)``.

    ``run_config`` replaces the run's config (the simulation runtime started
    from Python has none of its own).
    """
    app = ClientApp()

    @app.train(MESSAGE_TYPE.split(".", 1)[1])
    def relay(msg: Message, context: Context) -> Message:
        request = decode_request(msg.content)
        config = dict(context.run_config) if run_config is None else dict(run_config)
        reply = resolve(context).request(context.run_id, request, config)
        fields: dict[str, ConfigRecordValues] = dict(reply.to_fields())
        return Message(RecordDict({RECORD: ConfigRecord(fields)}), reply_to=msg)

    return app
