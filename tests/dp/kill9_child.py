"""Child process for the kill -9 test: train rounds forever, report each one.

``python -m tests.dp.kill9_child LEDGER`` opens a :class:`dp.PrivateClient`
on LEDGER (resuming whatever it holds), prints ``resumed <ε>`` and then, after
each round's ``train_round`` returns, ``round <r> <ε>``; the parent kills it
with SIGKILL at a random moment.
"""

from __future__ import annotations

import sys
from pathlib import Path

import dp
from tests.dp.tinykit import config, tiny_dataset, tiny_model


def main(path: str) -> None:
    data = tiny_dataset()
    client = dp.PrivateClient(
        "crash", len(data), config(epsilon_budget=1e6), Path(path)
    )
    entries = client.ledger.entries
    start = entries[-1].round + 1 if entries else 0
    print(f"resumed {client.epsilon_spent()!r}", flush=True)
    model = tiny_model()
    for r in range(start, start + 100_000):
        res = client.train_round(model, data, round_idx=r, lr=0.1)
        print(f"round {r} {res.epsilon_after!r}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
