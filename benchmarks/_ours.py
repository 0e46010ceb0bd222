"""fedshield's side of the benchmarks: thin adapters over ``secagg``.

Each builder returns either a :data:`~benchmarks._harness.Job` or a string
saying why our side cannot be measured (for instance, ``secagg`` not landed).
"""

from __future__ import annotations

from benchmarks._harness import Job

MISSING = "secagg.run_session not available yet"


def status() -> str:
    """One line: can our side run?"""
    try:
        import secagg
    except ImportError as exc:
        return f"secagg not importable: {exc}"
    return "ready" if hasattr(secagg, "run_session") else MISSING


def client_job(d: int, k: int, seed: int) -> Job | str:
    """One client's masking work at dimension ``d`` with ``k`` neighbours."""
    return status() if status() != "ready" else MISSING


def server_job(
    n: int, d: int, k: int | None, threshold: int, dropped: int, seed: int
) -> Job | str:
    """The server's unmasking of ``n`` clients, ``dropped`` of them gone."""
    return status() if status() != "ready" else MISSING


def describe_server_result(result: object) -> str:
    """A short correctness note on what the timed server call returned."""
    return ""


def upload_bytes(n: int, d: int, k: int | None, threshold: int) -> int | str:
    """Bytes one client uploads over a whole session (real ``to_bytes`` sizes)."""
    return status() if status() != "ready" else MISSING
