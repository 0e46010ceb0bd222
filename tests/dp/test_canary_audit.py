"""The one-run canary audit has power and does not refute a correct DP-SGD.

Each run draws fresh CSPRNG canary bits and noise.  The DP assertion fails
spuriously only if the audit's 95 %-confidence bound is wrong (≤ 5 %, and far
less here: this black-box audit certifies ε_LB ≈ 0–0.5 against an accounted
3.9); the control's bound is deterministic up to canaries never sampled.
"""

from __future__ import annotations

from pathlib import Path

import dp
from dp.empirical import CanaryAuditConfig, empirical_audit


def test_audit_bounds_dp_below_accounting_and_non_private_clearly_above(
    tmp_path: Path,
) -> None:
    cfg = CanaryAuditConfig()
    private = empirical_audit(cfg, private=True, workdir=tmp_path)
    control = empirical_audit(cfg, private=False)
    accounted = private.epsilon_accounted
    assert accounted is not None and control.epsilon_accounted is None
    assert private.consistent
    assert 0.0 <= private.epsilon_lower_bound <= accounted
    # The same audit on the same setup without clipping and noise certifies
    # more than the DP run's accounted ε: it would catch missing noise.
    assert control.epsilon_lower_bound > accounted
    assert control.epsilon_lower_bound > private.epsilon_lower_bound + 2.0
    # The private run went through the real client path: its ledger verifies
    # and records exactly the accounted ε.
    entries = dp.read_ledger(tmp_path / "audit-ledger.jsonl")
    assert len(entries) == cfg.rounds
    assert entries[-1].epsilon == accounted
    assert private.bound.m == control.bound.m == cfg.num_canaries
