"""The pilot's PNG plots: accuracy and loss by round, ε, label distribution.

Drawn with matplotlib's Agg backend (files only, no display needed), and
embedded by ``report.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.pilot.report import PilotReport, describe_mode

__all__ = ["PLOTS", "write_plots"]

#: Plot file names inside a run folder.
PLOTS = {
    "accuracy": "accuracy.png",
    "loss": "loss.png",
    "epsilon": "epsilon.png",
    "labels": "label_distribution.png",
}


def write_plots(report: PilotReport, folder: Path) -> dict[str, Path]:
    """Draw the PNGs into `folder`; returns name → path."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works on headless servers
    import matplotlib.pyplot as plt

    out = {name: folder / file for name, file in PLOTS.items()}
    for key, column, label in (
        ("accuracy", 2, "test accuracy"),
        ("loss", 1, "test loss"),
    ):
        _plot_curve(plt, report, out[key], key, column, label)
    _plot_epsilon(plt, report, out["epsilon"])
    _plot_labels(plt, report, out["labels"])
    return out


def _plot_curve(
    plt: Any, report: PilotReport, path: Path, key: str, column: int, label: str
) -> None:
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    fed = report.federated_curve
    ax.plot(
        [p[0] for p in fed],
        [p[column] for p in fed],
        marker="o",
        label=f"federated ({describe_mode(report.config)})",
    )
    if report.centralised_curve:
        cen = report.centralised_curve
        ax.plot(
            [p[0] for p in cen],
            [p[column] for p in cen],
            marker="s",
            linestyle="--",
            label="simulation-only reference: centralised, non-private",
        )
    if key == "accuracy":
        ax.axhline(
            report.majority_rate,
            color="grey",
            linewidth=0.8,
            linestyle=":",
            label="majority class",
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round (centralised: epochs of the same count)")
    ax.set_ylabel(label)
    ax.set_title(f"{report.config.run.name}: {label} by round")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_epsilon(plt: Any, report: PilotReport, path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    many = len(report.epsilon_by_round) > 10
    for name, points in report.epsilon_by_round.items():
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            linewidth=1.0 if many else 1.5,
            label=None if many else name,
        )
    privacy = report.plan.privacy
    if privacy is not None:
        ax.axhline(
            privacy.epsilon_budget,
            color="red",
            linestyle="--",
            linewidth=1,
            label="budget",
        )
    else:
        ax.text(
            0.5,
            0.5,
            "DP disabled: no privacy guarantee",
            ha="center",
            transform=ax.transAxes,
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("ε spent (cumulative)")
    delta = "" if privacy is None else f" (δ={privacy.delta:g})"
    ax.set_title(f"ε of each of {len(report.epsilon_by_round)} institutions{delta}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_labels(plt: Any, report: PilotReport, path: Path) -> None:
    names = [i.name for i in report.institutions]
    classes = list(report.class_names)
    counts = np.array(
        [[i.label_counts.get(c, 0) for c in classes] for i in report.institutions],
        dtype=np.float64,
    )
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    height = max(3.0, 0.28 * len(names) + 1.5)
    fig, ax = plt.subplots(figsize=(2.2 + 1.4 * len(classes), height))
    image = ax.imshow(share, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(
        range(len(names)),
        [f"{n} (n={int(c)})" for n, c in zip(names, counts.sum(axis=1), strict=True)],
        fontsize=7 if len(names) > 20 else 9,
    )
    for r in range(len(names)):
        for c in range(len(classes)):
            ax.text(
                c,
                r,
                f"{share[r, c]:.2f}",
                ha="center",
                va="center",
                fontsize=6 if len(names) > 20 else 8,
                color="white" if share[r, c] < 0.5 else "black",
            )
    fig.colorbar(image, ax=ax, label="share of the institution's rows")
    ax.set_title("label distribution per institution (the simulation's own view)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
