"""The Flower ClientApp: relays each stage to the institution's node agent.

It holds nothing and decides nothing: it decodes the coordinator's request,
hands it to the node agent (its Unix socket, named by the SuperNode's
``--node-config fedshield-agent=PATH``), and returns the agent's reply.
A refusal or failure raises, which Flower turns into an error reply; the
coordinator counts the node as a dropout at that stage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from core.flower.agent import AgentLink
from core.flower.errors import AgentError, WireError
from core.flower.protocol import MESSAGE_TYPE, RECORD, StageReply, StageRequest

__all__ = ["AGENT_KEY", "AgentHandle", "app", "decode_request", "make_client_app"]

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


def socket_agent(context: Context) -> AgentHandle:
    """The deployment resolver: the agent socket named in the node config."""
    path = context.node_config.get(AGENT_KEY)
    if not isinstance(path, str) or not path:
        raise AgentError(
            f"this SuperNode has no --node-config {AGENT_KEY}=PATH naming its agent"
        )
    return AgentLink(path)


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
        return Message(
            RecordDict({RECORD: ConfigRecord(reply.to_fields())}), reply_to=msg
        )

    return app


#: The deployment ClientApp (the example app's ``clientapp`` component).
app = make_client_app(socket_agent)
