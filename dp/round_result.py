"""What one finished private round hands back to the coordinator."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dp.ledger_format import LedgerEntry
from dp.ledger_heads import LedgerHead

__all__ = ["PrivateRoundResult"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivateRoundResult:
    """One finished private round.  Its ledger entries are already durable.

    Everything here is covered by the client's ε or public under its
    accounting: ``state_dict`` holds the trained weights (clipped, noised
    DP-SGD; detached copies, keys as in the model passed in; the model passed
    in is left unchanged), the rest are accounted values and the ledger's
    records of them.  ``noised_loss`` is the DP-released mean clipped training
    loss when ``DPConfig.release_loss`` is on (charged as ``loss_entry``), else
    None: no un-noised metric is returned.  ``num_examples`` is the count the
    caller passed in, public under replace-one accounting.
    """

    client_id: str
    round_idx: int
    state_dict: dict[str, torch.Tensor]
    num_examples: int
    steps: int
    noise_multiplier: float
    sample_rate: float
    epsilon_before: float
    epsilon_after: float
    epsilon_budget: float
    ledger_entry: LedgerEntry
    loss_entry: LedgerEntry | None
    noised_loss: float | None
    ledger_head: LedgerHead
