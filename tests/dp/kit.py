"""Plain helpers for the ``dp`` tests: tiny data, models, configs and ledgers.

Fixtures live in ``conftest.py``; this module holds what must also work outside
pytest (the kill -9 child process below) or at collection time.  Test data may
come from seeded torch generators; DP noise and Poisson sampling always come
from :class:`dp.ChaCha20Random`.

``python -m tests.dp.kit demo-ledgers DIR`` writes the 16 ledgers the hospital
pilot's schedule charges (15 rounds, batch 16, target ε 4 at δ = 1e-4,
replace-one, PLD; the sites' ceil(n/16) as in its data), without training:
the input of the audit speed measurement.

``python -m tests.dp.kit kill9-child LEDGER`` opens a :class:`dp.PrivateClient`
on LEDGER (resuming whatever it holds), prints ``resumed <ε>`` and then, after
each round's ``train_round`` returns, ``round <r> <ε>``, forever; the durability
test kills it with SIGKILL at a random moment.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

import dp
from dp.ledger_format import GENESIS_SHA256, LedgerEntry

ROWS = 60
FEATURES = 4
DELTA = 1e-3
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def dataset(rows: int = ROWS, seed: int = 0) -> TensorDataset:
    """``rows`` examples of ``FEATURES`` features, label ``x₀ + x₁/2 > 0``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, FEATURES, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y)


def model(seed: int = 0, *, hidden: int = 0) -> nn.Module:
    """A linear classifier (or a one-hidden-layer MLP), initialised from ``seed``.

    The initialisation uses a private generator, so it never depends on (or
    moves) torch's global RNG.
    """
    if hidden:
        m: nn.Module = nn.Sequential(
            nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, 2)
        )
    else:
        m = nn.Sequential(nn.Linear(FEATURES, 2))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return m


#: Settings under which Opacus's accountants apply (add/remove-one only).
OPACUS_RDP: dict[str, object] = {
    "neighbouring": dp.Neighbouring.ADD_REMOVE,
    "accountant": dp.Accountant.RDP,
}


def config(**overrides: object) -> dp.DPConfig:
    """σ=1, δ=1e-3, C=1, budget 50, 3 planned rounds of batch 10 (6 steps).

    Replace-one neighbours and the PLD accountant (the defaults) unless
    overridden.
    """
    base: dict[str, object] = {
        "delta": DELTA,
        "max_grad_norm": 1.0,
        "epsilon_budget": 50.0,
        "planned_rounds": 3,
        "batch_size": 10,
        "noise_multiplier": 1.0,
    }
    base.update(overrides)
    return dp.DPConfig(**base)  # type: ignore[arg-type]


def fixed_rng(tag: int = 1) -> dp.ChaCha20Random:
    """A reproducible generator (fixed key); never use one outside tests."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return dp.ChaCha20Random.insecure_from_key_for_testing(bytes([tag]) * 32)


def client(
    path: Path,
    cfg: dp.DPConfig | None = None,
    *,
    client_id: str = "c1",
    rows: int = ROWS,
    rng_tag: int | None = None,
) -> dp.PrivateClient:
    """A private client on the ledger at ``path`` (fresh CSPRNG unless ``rng_tag``)."""
    rng = fixed_rng(rng_tag) if rng_tag is not None else None
    return dp.PrivateClient(client_id, rows, cfg or config(), path, rng=rng)


def write_ledger(
    path: Path,
    *,
    client_id: str = "c1",
    rounds: int = 4,
    run: dp.StepRun | None = None,
    delta: float = 1e-5,
    accountant: dp.Accountant = dp.Accountant.PLD,
    neighbouring: dp.Neighbouring = dp.Neighbouring.REPLACE_ONE,
    budget: float = 50.0,
    first_round: int = 0,
) -> tuple[dp.LedgerEntry, ...]:
    """A valid ledger of ``rounds`` charges written by :class:`dp.PrivacyLedger`.

    Appends to the ledger at ``path`` if it exists, rounds from ``first_round``.
    """
    step = run if run is not None else dp.StepRun(1.1, 0.01, 100)
    ledger = dp.PrivacyLedger.open(path, missing_ok=True)
    for r in range(first_round, first_round + rounds):
        eps = dp.epsilon_for_history(
            [*ledger.history, step], delta, accountant, neighbouring=neighbouring
        )
        ledger.append(
            client_id=client_id,
            round_idx=r,
            run=step,
            delta=delta,
            accountant=accountant,
            neighbouring=neighbouring,
            epsilon=eps,
            epsilon_budget=budget,
            clip_bound=1.0,
            now=T0 + dt.timedelta(seconds=r),
        )
    return ledger.entries


def rechain(entries: list[LedgerEntry]) -> bytes:
    """Serialize ``entries`` with a freshly computed, valid hash chain."""
    out = b""
    prev = GENESIS_SHA256
    for seq, e in enumerate(entries):
        e = dataclasses.replace(e, seq=seq, prev_sha256=prev)
        out += e.line_bytes()
        prev = e.entry_sha256
    return out


def ledger_lines(path: Path) -> list[bytes]:
    """The ledger's lines, each with its newline."""
    return path.read_bytes().splitlines(keepends=True)


def _kill9_child(path: str) -> None:
    data = dataset()
    c = client(Path(path), config(epsilon_budget=1e6), client_id="crash")
    entries = c.ledger.entries
    start = entries[-1].round + 1 if entries else 0
    print(f"resumed {c.epsilon_spent()!r}", flush=True)
    m = model()
    for r in range(start, start + 100_000):
        res = c.train_round(m, data, round_idx=r, lr=0.1)
        print(f"round {r} {res.epsilon_after!r}", flush=True)


#: ceil(n/16) of the hospital pilot's 16 sites.
DEMO_STEPS_PER_ROUND = (8, 25, 9, 18, 11, 5, 7, 4, 9, 20, 8, 10, 7, 5, 7, 23)


def demo_ledgers(out: Path, rounds: int = 15) -> None:
    """Write the hospital pilot's 16 ledgers (see the module text) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = dp.DPConfig(
        target_epsilon=4.0,
        delta=1e-4,
        max_grad_norm=1.0,
        epsilon_budget=8.0,
        planned_rounds=rounds,
        batch_size=16,
    )
    for site, k in enumerate(DEMO_STEPS_PER_ROUND):
        sigma = dp.calibrate_noise_multiplier(cfg, 16 * k)
        write_ledger(
            out / f"client-{site}.ledger.jsonl",
            client_id=f"client-{site}",
            rounds=rounds,
            run=dp.StepRun(sigma, 1 / k, k),
            delta=cfg.delta,
            budget=cfg.epsilon_budget,
            first_round=1,
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "kill9-child":
        _kill9_child(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "demo-ledgers":
        demo_ledgers(Path(sys.argv[2]))
    else:
        sys.exit(
            "usage: python -m tests.dp.kit {kill9-child LEDGER | demo-ledgers DIR}"
        )
