"""A whole consortium on one machine (127.0.0.1): for dry runs, tests, benchmarks.

:class:`Cluster` starts a TLS SuperLink with SuperNode authentication, a node
agent and a registered SuperNode per institution (keys from
:func:`core.flower.pki.make_test_pki`), and runs ``flwr run``.  Every process
starts in its own process group (Flower's SuperExec and the per-message
ClientApp processes stay in their parent's group), and :meth:`Cluster.stop`
kills every group it started; use it in a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.flower.pki import DryRunPKI

__all__ = ["APP", "Cluster", "free_port", "wait_files", "wait_port"]

ROOT = Path(__file__).resolve().parents[2]
#: The example Flower app (its ClientApp is the agent relay).
APP = ROOT / "examples" / "flower_app"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class Cluster:
    """The processes of one loopback consortium, under ``folder``.

    ``node_config`` adds ``--node-config`` entries to every SuperNode
    (``{i}`` in a value becomes the node's index).
    """

    folder: Path
    pki: DryRunPKI
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    port: int = 0
    node_config: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PYTHONPATH=os.pathsep.join((str(ROOT), str(APP))),
            FLWR_HOME=str(self.folder / "flwr-home"),
            FLWR_DISABLE_UPDATE_CHECK="1",
            FLWR_SUPEREXEC_TASK_POLL_INTERVAL="0.1",
            OMP_NUM_THREADS="1",
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        )
        return env

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.folder / "logs" / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.folder,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> list[str]:
        """Kill every process group started; names of groups that survived."""
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        survivors = []
        for name, proc in self.procs.items():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(timeout=10)
            if _live_members(proc.pid, wait=5.0):
                survivors.append(name)
        return survivors

    # -- the pieces ---------------------------------------------------------

    def start_superlink(self) -> None:
        self.port = free_port()
        self.start("superlink", [
            str(BIN / "flower-superlink"),
            "--ssl-ca-certfile", str(self.pki.ca_cert),
            "--ssl-certfile", str(self.pki.server_cert),
            "--ssl-keyfile", str(self.pki.server_key),
            "--enable-supernode-auth",
            "--disable-runtime-dependency-installation",
            "--host", "127.0.0.1", "--port", str(self.port),
        ])  # fmt: skip
        wait_port(self.port, 60)
        home = self.folder / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "test"\n\n[superlink.test]\n'
            f'address = "127.0.0.1:{self.port}"\n'
            f'root-certificates = "{self.pki.ca_cert}"\n',
            encoding="utf-8",
        )

    def register(self, public_keys: list[Path]) -> None:
        """``flwr supernode register`` every key (in parallel: each is a CLI start)."""
        calls = [
            subprocess.Popen(
                [str(BIN / "flwr"), "supernode", "register", str(key), "test"],
                env=self.env, cwd=self.folder, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for key in public_keys
        ]  # fmt: skip
        for call in calls:
            out, _ = call.communicate(timeout=60)
            assert call.returncode == 0, out.decode()

    def start_agent(self, i: int, data: Path, label: str) -> Path:
        node = self.pki.nodes[i]
        sock = self.folder / "agents" / f"{i}.sock"
        ready = self.folder / "agents" / f"{i}.ready"
        ready.parent.mkdir(parents=True, exist_ok=True)
        self.start(f"agent-{i}", [
            sys.executable, "-m", "core.flower.agent", "--socket", str(sock),
            "--institution", str(node.institution), "--data", str(data),
            "--label", label, "--ledger-dir", str(self.folder / f"node-{i}-ledgers"),
            "--identity-key", str(node.identity_key), "--roster", str(self.pki.roster),
            "--seed", str(100 + i), "--ready-file", str(ready),
        ])  # fmt: skip
        return ready

    def start_supernode(self, i: int) -> None:
        node = self.pki.nodes[i]
        sock = self.folder / "agents" / f"{i}.sock"
        self.start(f"supernode-{i}", [
            str(BIN / "flower-supernode"),
            "--superlink", f"127.0.0.1:{self.port}",
            "--root-certificates", str(self.pki.ca_cert),
            "--auth-supernode-private-key", str(node.auth_key),
            "--port", str(free_port()),
            "--node-config", " ".join(
                [f'fedshield-agent="{sock}"']
                + [f'{k}="{v.format(i=i)}"' for k, v in self.node_config.items()]
            ),
        ])  # fmt: skip

    def flwr_run(
        self, config: Path, timeout: float, app: Path = APP
    ) -> subprocess.CompletedProcess[bytes]:
        """``flwr run APP test --run-config CONFIG --stream``, to its end."""
        return subprocess.run(
            [str(BIN / "flwr"), "run", str(app), "test", "--run-config", str(config),
             "--stream"],
            env=self.env, cwd=self.folder, capture_output=True, timeout=timeout,
        )  # fmt: skip


def _live_members(pgid: int, wait: float) -> list[int]:
    """Pids of the group that are not zombies (orphans reaped by no one)."""
    deadline = time.monotonic() + wait
    while True:
        live = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Fields after the command's closing parenthesis: state, ppid, pgrp.
            state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == pgid and state != "Z":
                live.append(int(entry.name))
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(0.2)


def wait_files(paths: list[Path], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            missing = [str(p) for p in paths if not p.exists()]
            raise TimeoutError(f"agents not ready: {missing}")
        time.sleep(0.2)
