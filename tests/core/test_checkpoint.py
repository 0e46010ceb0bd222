"""Checkpoints: atomic, weights-only, bit-identical resume, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from core import (
    CheckpointMismatchError,
    Federation,
    load_checkpoint,
    save_checkpoint,
)
from tests.core.kit import Kit

ROUNDS = 5


def build(kit: Kit, run_dir: Path, model: nn.Module | None = None) -> Federation:
    """A run that uses every piece of resumable state.

    Sampling (fraction 0.5), dropout (torch's global RNG), minibatch shuffles
    (the trainer's generator), server momentum, a stateful trainer wrapper
    that retires clients, and a stateful aggregator that aborts a round.
    """
    model = model if model is not None else kit.model(seed=1)
    trainer = kit.trainer(model, local_epochs=2, batch_size=5, learning_rate=0.2,
                          seed=4)  # fmt: skip
    return kit.federation(
        model=model,
        clients=kit.clients(6),
        trainer=kit.BudgetTrainer(trainer, budget=3),
        aggregator=kit.AbortingAggregator([2]),
        rounds=ROUNDS,
        fraction_fit=0.5,
        server_momentum=0.9,
        seed=11,
        run_dir=run_dir,
    )


def test_resume_is_bit_identical_to_an_uninterrupted_run(
    kit: Kit, tmp_path: Path
) -> None:
    straight = build(kit, tmp_path / "straight").run()

    first = build(kit, tmp_path / "resumed")
    for _ in range(3):
        first.run_round()
    del first
    torch.manual_seed(12345)  # a new process would start from other RNG state
    second = build(kit, tmp_path / "resumed")
    second.resume()
    assert second.rounds_completed == 3
    resumed = second.run()

    assert torch.equal(resumed.params, straight.params)
    assert [r.cohort for r in resumed.history] == [
        r.cohort for r in straight.history[3:]
    ]
    assert [r.eval_loss for r in resumed.history] == [
        r.eval_loss for r in straight.history[3:]
    ]
    rows = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    headers = [json.loads(x) for x in rows if json.loads(x)["type"] == "header"]
    assert [h["resumed_from_round"] for h in headers] == [3]


def test_checkpoint_of_another_model_shape_is_refused(
    kit: Kit, tmp_path: Path
) -> None:
    build(kit, tmp_path).run_round()
    torch.manual_seed(0)
    wider = nn.Sequential(
        nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2)
    )
    other = build(kit, tmp_path, model=wider)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"different model shape: entry 0 is '0\.weight:\[8, 4\]:float32' in "
        r"the checkpoint but '0\.weight:\[16, 4\]:float32' in this model",
    ):
        other.resume()
    assert other.rounds_completed == 0


def test_checkpoint_of_another_format_version_is_refused(
    kit: Kit, tmp_path: Path
) -> None:
    fed = build(kit, tmp_path)
    state = fed.state_dict()
    state["version"] = 99
    with pytest.raises(CheckpointMismatchError, match="version must be 1; found 99"):
        fed.load_state_dict(state)


class Evil:
    """Not a tensor or plain value: unpickling it could run code."""


def test_loading_never_unpickles_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"payload": Evil()}, path)
    with pytest.raises(CheckpointMismatchError, match="refusing to unpickle"):
        load_checkpoint(path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="refusing to unpickle"):
        load_checkpoint(tmp_path / "junk.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointMismatchError, match=r"not a readable .*truncated"):
        load_checkpoint(tmp_path / "empty.pt")


def test_save_is_atomic_and_leaves_no_temporary_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"round": 1, "w": torch.ones(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]

    def broken_save(obj: object, f: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"round": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    kept = load_checkpoint(path)
    assert kept["round"] == 1 and torch.equal(kept["w"], torch.ones(3))
