"""The ``clientapp`` component: relays each stage to the node agent's socket.

Flower starts one process per message, so this module imports only Flower
and the standard library; the institution's node agent
(``python -m core.flower.agent``), installed and run by the institution,
decodes and checks everything, trains, and holds the session's secrets.
Frame both ways: ``u32 header length ‖ JSON header ‖ u64 payload length ‖
payload`` (see ``core.flower.agent``).
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

__all__ = ["app"]

RECORD = "fedshield"
AGENT_KEY = "fedshield-agent"
TIMEOUT = 3600.0

app = ClientApp()


def _recv(conn: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = conn.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("the node agent closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _exchange(
    path: str, header: dict[str, Any], payload: bytes
) -> tuple[dict[str, Any], bytes]:
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(TIMEOUT)
        conn.connect(path)
        conn.sendall(struct.pack("<I", len(head)) + head)
        conn.sendall(struct.pack("<Q", len(payload)) + payload)
        (size,) = struct.unpack("<I", _recv(conn, 4))
        reply = json.loads(_recv(conn, size))
        (length,) = struct.unpack("<Q", _recv(conn, 8))
        return reply, _recv(conn, length)


@app.train("fedshield_secagg")
def relay(msg: Message, context: Context) -> Message:
    """Forward the request's fields to the agent; return its reply's fields."""
    path = context.node_config.get(AGENT_KEY)
    if not isinstance(path, str) or not path:
        raise RuntimeError(f"SuperNode needs --node-config {AGENT_KEY}=PATH")
    fields = dict(msg.content.config_records[RECORD])
    payload = fields.pop("payload", b"")
    if not isinstance(payload, bytes):
        raise TypeError("request payload must be bytes")
    header = {
        "run": context.run_id,
        "fields": fields,
        "run_config": dict(context.run_config) if fields.get("stage") == "train"
        else {},
    }  # fmt: skip
    reply, out = _exchange(path, header, payload)
    if not reply.get("ok"):
        raise RuntimeError(f"node agent refused: {reply.get('error', 'unknown')}")
    return Message(
        RecordDict({RECORD: ConfigRecord({**reply["fields"], "payload": out})}),
        reply_to=msg,
    )
