"""Empirical one-run canary audit of the real DP-SGD pipeline.

The audit trains **once** through :class:`~dp.client.PrivateClient` (the same
code path clients use: CSPRNG noise and sampling, Opacus clipping, ledger) on
a client dataset into which m canaries were inserted, each with probability
1/2 (bits from :class:`~dp.noise.ChaCha20Random`, the auditor's secret).  It
then scores every canary from the trained model's outputs alone and turns
the scores into a lower bound on ε with :func:`dp.one_run.audit_scores`.  A
lower bound above the accounted ε proves the implementation is less private
than its accounting claims.

Setup (chosen so the audit has power and runs in seconds on one CPU core):

* clean data: x ∈ ℝᵈ ~ N(0, I), label 1[x·w* > 0], with m extra input
  coordinates that are 0;
* canary i: the input ``e_{d+i}`` (all clean features 0, its own indicator
  coordinate 1), label 1.  Only canary i ever moves the weights of coordinate
  d+i, so its influence on the model is isolated, as with the "Dirac" canaries
  of the white-box audits, but it is read out black-box;
* model: a zero-initialised linear classifier; score = logit margin
  ``z₁(e_{d+i}) − z₀(e_{d+i})``.

The non-private control runs the same data, sampler and schedule with plain
SGD (no clipping, no noise): it must give a clearly larger bound.

The client's sample rate q = 1/ceil(n/B) depends on n, hence on how many
canaries were drawn in.  The default ``num_clean`` puts n's mean (clean +
m/2) in the middle of one ceil(n/B) step, so for m = 1000 q is the same
1/ceil(n/B) unless the count strays more than 3 standard deviations; the
bound is a bound on the mechanism as run, whatever q it ended up with.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from dp.client import PrivateClient
from dp.config import Accountant, DPConfig, Neighbouring
from dp.engine import PoissonBatchSampler
from dp.noise import ChaCha20Random
from dp.one_run import OneRunBound, audit_scores

__all__ = ["CanaryAuditConfig", "EmpiricalAuditResult", "empirical_audit"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CanaryAuditConfig:
    """Parameters of the canary audit (defaults: ~3–5 s on one core)."""

    num_canaries: int = 1000
    num_clean: int = 450
    num_features: int = 10
    batch_size: int = 100
    rounds: int = 10
    local_epochs: int = 1
    noise_multiplier: float = 1.5
    max_grad_norm: float = 1.0
    lr: float = 1.0
    delta: float = 1e-5
    significance: float = 0.05
    guess_counts: tuple[int, ...] = (10, 25, 50, 100, 250)
    accountant: Accountant = Accountant.RDP
    # Each canary is either in the dataset or not: the audit's neighbours are
    # add/remove-one, so its bound is compared with the add/remove ε (never
    # above the replace-one ε of the same run).
    neighbouring: Neighbouring = Neighbouring.ADD_REMOVE


@dataclass(frozen=True, slots=True, kw_only=True)
class EmpiricalAuditResult:
    """Outcome of one audit run.  ``epsilon_accounted`` is None when non-private."""

    private: bool
    bound: OneRunBound
    epsilon_accounted: float | None
    num_included: int

    @property
    def epsilon_lower_bound(self) -> float:
        """The Bonferroni-corrected one-run lower bound on ε."""
        return self.bound.epsilon_lower_bound

    @property
    def consistent(self) -> bool:
        """False when the audit refutes the accounting (ε_LB > ε_accounted)."""
        acc = self.epsilon_accounted
        return acc is None or self.epsilon_lower_bound <= acc


def _dataset(
    cfg: CanaryAuditConfig, included: list[bool]
) -> tuple[TensorDataset, torch.Tensor]:
    d, m = cfg.num_features, cfg.num_canaries
    # Clean data needs no secrecy; a fixed-seed private generator keeps the
    # global torch RNG untouched.
    gen = torch.Generator().manual_seed(0)
    clean_x = torch.randn(cfg.num_clean, d, generator=gen)
    w_star = torch.randn(d, generator=gen)
    clean = torch.cat([clean_x, torch.zeros(cfg.num_clean, m)], dim=1)
    clean_y = (clean_x @ w_star > 0).long()
    canary_x = torch.cat([torch.zeros(m, d), torch.eye(m)], dim=1)
    keep = torch.tensor(included, dtype=torch.bool)
    x = torch.cat([clean, canary_x[keep]])
    y = torch.cat([clean_y, torch.ones(int(keep.sum()), dtype=torch.long)])
    return TensorDataset(x, y), canary_x


def _model(cfg: CanaryAuditConfig) -> nn.Module:
    model = nn.Linear(cfg.num_features + cfg.num_canaries, 2)
    # Zero init: a canary that was never seen scores exactly its prior.
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    return model


def _train_non_private(
    cfg: CanaryAuditConfig, model: nn.Module, data: TensorDataset, rng: ChaCha20Random
) -> None:
    n = len(data)
    steps = -(-n // cfg.batch_size)
    sampler = PoissonBatchSampler(
        num_samples=n, sample_rate=1.0 / steps, steps=steps, rng=rng
    )
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    x, y = data.tensors
    for _ in range(cfg.rounds * cfg.local_epochs):
        for batch in sampler:
            opt.zero_grad()
            # Same normaliser as the private path: the public batch size.
            loss = loss_fn(model(x[batch]), y[batch]) / cfg.batch_size
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()


def _train_private(
    cfg: CanaryAuditConfig,
    model: nn.Module,
    data: TensorDataset,
    workdir: Path,
    rng: ChaCha20Random,
) -> float:
    dp_cfg = DPConfig(
        noise_multiplier=cfg.noise_multiplier,
        delta=cfg.delta,
        max_grad_norm=cfg.max_grad_norm,
        epsilon_budget=1e9,
        planned_rounds=cfg.rounds,
        local_epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        accountant=cfg.accountant,
        neighbouring=cfg.neighbouring,
    )
    client = PrivateClient(
        "audit-canary-client",
        len(data),
        dp_cfg,
        workdir / "audit-ledger.jsonl",
        rng=rng,
    )
    for r in range(cfg.rounds):
        result = client.train_round(model, data, round_idx=r, lr=cfg.lr)
        model.load_state_dict(result.state_dict)
    return client.epsilon_spent()


def empirical_audit(
    config: CanaryAuditConfig | None = None,
    *,
    private: bool = True,
    workdir: Path | None = None,
    rng: ChaCha20Random | None = None,
) -> EmpiricalAuditResult:
    """Insert canaries, train once (privately or not), and bound ε from below.

    ``workdir`` receives the private run's ledger (a temporary directory when
    omitted).  ``rng`` draws the inclusion bits, the Poisson batches and the
    DP noise (default: a fresh OS-keyed :class:`ChaCha20Random`; tests may
    pass a fixed-key one to be reproducible).
    """
    cfg = config if config is not None else CanaryAuditConfig()
    rng = rng if rng is not None else ChaCha20Random()
    # Inclusion bits from the CSPRNG: the auditor's secret.
    included = [bool(b) for b in rng.bernoulli(cfg.num_canaries, 0.5)]
    data, canary_x = _dataset(cfg, included)
    model = _model(cfg)
    accounted: float | None = None
    if private:
        if workdir is None:
            with tempfile.TemporaryDirectory() as tmp:
                accounted = _train_private(cfg, model, data, Path(tmp), rng)
        else:
            accounted = _train_private(cfg, model, data, workdir, rng)
    else:
        _train_non_private(cfg, model, data, rng)
    with torch.no_grad():
        logits = model(canary_x)
        scores = (logits[:, 1] - logits[:, 0]).tolist()
    bound = audit_scores(
        scores,
        included,
        delta=cfg.delta,
        significance=cfg.significance,
        ks=cfg.guess_counts,
    )
    return EmpiricalAuditResult(
        private=private,
        bound=bound,
        epsilon_accounted=accounted,
        num_included=sum(included),
    )
