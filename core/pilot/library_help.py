"""Help text of the TOML keys the libraries own, shown in the config template.

For each library table: where its config object sits in the pilot's section
(the attribute path) and one line of help per key, in file order. The keys
themselves are the libraries' field names; the schema refuses any other.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["LIBRARY_HELP"]

#: Table -> (attribute path of its config object, help per key).
LIBRARY_HELP: Mapping[str, tuple[tuple[str, ...], Mapping[str, str]]] = {
    "federation": (("config",), {
        "rounds": "FedAvg rounds",
        "server_learning_rate": "server step: w += lr × (mean update)",
        "server_momentum": "FedAvgM momentum (0 = plain FedAvg)",
        "eval_every": "evaluate on the test rows every this many rounds",
    }),
    "training": ((), {
        "local_epochs": "passes over an institution's rows per round",
        "batch_size": "minibatch (under DP: the expected Poisson batch)",
        "learning_rate": "local optimizer step size",
        "optimizer": "sgd or adam",
        "momentum": "sgd only, and 0 under DP",
        "weight_decay": "L2 penalty (0 under DP)",
    }),
    "privacy": (("config",), {
        "target_epsilon": "calibrate σ to reach this ε after the planned rounds",
        "noise_multiplier": "or give σ instead of target_epsilon",
        "delta": "δ; must be below 1 / (largest institution's rows)",
        "max_grad_norm": "per-example gradient clipping norm",
        "epsilon_budget": "an institution stops before exceeding it",
        "neighbouring": "replace_one (one record replaced; row counts public) "
        "or add_remove",
        "accountant": "pld (either relation), rdp or prv (add_remove only)",
        "grad_sample_mode": "per-example gradients: hooks or functorch",
        "release_loss": "also release the mean training loss, DP-noised and "
        "charged to the ledger",
        "loss_bound": "release_loss: each example's loss clipped to [0, bound]",
        "loss_noise_multiplier": "release_loss: noise σ on the clipped loss sum",
    }),
    "secure_aggregation": (("settings",), {
        "mode": "semi-honest, or hardened: signed identities and consistency",
        "dropout_tolerance": "share of a cohort that may drop (sets t)",
        "corrupt_fraction": "share assumed to collude with the coordinator",
        "ring_bits": "ring Z_2^k; must hold the weighted sum of a cohort",
        "value_bits": "quantisation of each update coordinate",
        "clip": "update coordinates clipped to [-clip, clip]; unset under "
        "DP: the update's bound from lr, steps, C and σ",
        "max_weight": "largest weight (rows) of an institution; unset: the "
        "largest institution's rows rounded up to a power of two",
        "complete_below": "cohorts this small use the complete graph",
    }),
}  # fmt: skip
