"""The node agent as a service: a Unix socket on the institution's machine.

Flower starts one short-lived ClientApp process per message, so the state of
a secure aggregation session cannot live in it without serialising secret
keys.  Instead each institution runs ``python -m core.flower.agent`` next to
its SuperNode; the ClientApp connects to the agent's socket (path in the
SuperNode's ``--node-config fedshield-agent=...``) and relays one request.
Secrets never leave the agent's memory.

Frame, both ways: ``u32 header length ‖ header (JSON) ‖ u64 payload length
‖ payload``.  Request header: ``{"run": id, "fields": {stage, round,
cohort}, "run_config": {...}}`` (the run config only with the first stage);
reply header: ``{"ok": true, "fields": {the reply's fields but the
payload}}`` or ``{"ok": false, "error": kind}``.  The payload is the
message's ``payload`` field.  Nothing is unpickled.  The ClientApp relay
(``examples/flower_app/fedshield_app/relay.py``) speaks it with the
standard library only, so each message's process starts fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import struct
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.flower.errors import AgentError, DeploymentError, WireError
from core.flower.node import NodeAgent, NodeConfig
from core.flower.protocol import Stage, StageReply, StageRequest

__all__ = ["AgentLink", "main", "serve"]

logger = logging.getLogger(__name__)
_MAX_HEADER = 1 << 20
_MAX_PAYLOAD = 1 << 34


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            raise AgentError("the connection closed mid-frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def send_frame(conn: socket.socket, header: Mapping[str, Any], payload: bytes) -> None:
    """Send one frame."""
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    conn.sendall(struct.pack("<I", len(head)) + head + struct.pack("<Q", len(payload)))
    if payload:  # a send of nothing to a peer that already answered is EPIPE
        conn.sendall(payload)


def recv_frame(conn: socket.socket) -> tuple[dict[str, Any], bytes]:
    """Receive one frame; :class:`AgentError` on a malformed one."""
    (size,) = struct.unpack("<I", _recv_exact(conn, 4))
    if size > _MAX_HEADER:
        raise AgentError(f"frame header of {size} bytes is too large")
    try:
        header = json.loads(_recv_exact(conn, size))
    except ValueError:
        raise AgentError("frame header is not JSON") from None
    if not isinstance(header, dict):
        raise AgentError("frame header must be an object")
    (length,) = struct.unpack("<Q", _recv_exact(conn, 8))
    if length > _MAX_PAYLOAD:
        raise AgentError(f"frame payload of {length} bytes is too large")
    return header, _recv_exact(conn, length)


class AgentLink:
    """The ClientApp's end: one request per connection."""

    def __init__(self, path: str | Path, timeout: float = 600.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    def request(
        self, run_id: int, request: StageRequest, run_config: Mapping[str, Any]
    ) -> StageReply:
        """Send ``request``; the agent's reply, or :class:`AgentError`."""
        fields = request.to_fields()
        payload = fields.pop("payload")
        assert isinstance(payload, bytes)
        header = {
            "run": run_id,
            "fields": fields,
            "run_config": dict(run_config) if request.stage is Stage.TRAIN else {},
        }
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(self.timeout)
            try:
                conn.connect(self.path)
            except OSError as exc:
                raise AgentError(
                    f"node agent at {self.path} unreachable: {exc}"
                ) from None
            try:
                send_frame(conn, header, payload)
                reply, out = recv_frame(conn)
            except OSError as exc:
                raise AgentError(f"node agent at {self.path} failed: {exc}") from None
        if not reply.get("ok"):
            raise AgentError(f"node agent refused: {reply.get('error', 'unknown')}")
        got = reply.get("fields")
        if not isinstance(got, dict):
            raise AgentError("agent reply has no fields")
        try:
            return StageReply.from_fields({**got, "payload": out})
        except WireError as exc:
            raise AgentError(f"agent reply is malformed: {exc}") from None


def _answer(
    agent: NodeAgent, header: Mapping[str, Any], payload: bytes
) -> tuple[dict[str, Any], bytes]:
    # The relay in front of this agent is the coordinator's code: everything
    # it forwards is decoded and checked here, as if it came from the network.
    try:
        fields, run, config = header["fields"], header["run"], header["run_config"]
        if not isinstance(fields, dict) or not isinstance(config, dict):
            raise WireError("request fields and run config must be objects")
        if isinstance(run, bool) or not isinstance(run, int) or run < 0:
            raise WireError("run id must be an integer >= 0")
        request = StageRequest.from_fields({**fields, "payload": payload})
        reply = agent.handle(run, request, config)
    except KeyError as exc:
        return {"ok": False, "error": f"request lacks {exc}"}, b""
    except DeploymentError as exc:
        return {"ok": False, "error": str(exc)}, b""
    fields = reply.to_fields()
    out = fields.pop("payload")
    assert isinstance(out, bytes)
    return {"ok": True, "fields": fields}, out


def serve(agent: NodeAgent, path: str | Path, *, ready: Path | None = None) -> None:
    """Answer requests on the Unix socket ``path`` until killed (one at a time)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        old = os.umask(0o077)  # only the owner (and root) may connect
        try:
            server.bind(str(target))
        finally:
            os.umask(old)
        server.listen(8)
        if ready is not None:
            ready.write_text(str(os.getpid()), encoding="utf-8")
        while True:
            conn, _ = server.accept()
            with conn:
                try:
                    header, payload = recv_frame(conn)
                    reply, out = _answer(agent, header, payload)
                    send_frame(conn, reply, out)
                except (AgentError, OSError) as exc:
                    logger.warning("dropped a connection: %s", exc)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.flower.agent",
        description="fedshield node agent: holds this institution's data, ledger "
        "and secure-aggregation secrets; its SuperNode's ClientApp relays to it.",
    )
    p.add_argument("--socket", required=True, help="Unix socket path to listen on")
    p.add_argument(
        "--institution",
        type=int,
        required=True,
        help="this institution's consortium id (as in the roster)",
    )
    p.add_argument("--data", required=True, help="CSV of this institution's records")
    p.add_argument("--label", required=True, help="label column of the CSV")
    p.add_argument("--ledger-dir", required=True, help="folder of the privacy ledger")
    p.add_argument("--identity-key", help="Ed25519 identity key (hardened mode)")
    p.add_argument("--roster", help="consortium roster JSON (hardened mode)")
    p.add_argument("--seed", type=int, default=0, help="minibatch order (non-DP)")
    p.add_argument("--min-cohort", type=int, default=2)
    p.add_argument("--assumed-corrupt-fraction", type=float, default=0.0)
    p.add_argument("--max-dropout-fraction", type=float, default=0.5)
    p.add_argument(
        "--require-dp", action="store_true", help="refuse runs that turn DP-SGD off"
    )
    p.add_argument(
        "--epsilon-cap",
        type=float,
        default=float("inf"),
        help="refuse runs with a larger privacy budget",
    )
    p.add_argument("--ready-file", help="written with the pid once listening")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; bad settings exit 2 with one line on stderr."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agent %(message)s")
    try:
        agent = NodeAgent(NodeConfig(
            institution=args.institution, data=Path(args.data), label=args.label,
            ledger_dir=Path(args.ledger_dir),
            identity_key=Path(args.identity_key) if args.identity_key else None,
            roster=Path(args.roster) if args.roster else None, seed=args.seed,
            min_cohort=args.min_cohort,
            assumed_corrupt_fraction=args.assumed_corrupt_fraction,
            max_dropout_fraction=args.max_dropout_fraction,
            require_dp=args.require_dp, epsilon_cap=args.epsilon_cap,
        ))  # fmt: skip
    except DeploymentError as exc:
        print(f"fedshield agent: {exc}", file=sys.stderr)
        return 2
    serve(agent, args.socket, ready=Path(args.ready_file) if args.ready_file else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
