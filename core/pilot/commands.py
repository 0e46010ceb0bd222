"""``fedshield run CONFIG.toml`` and ``fedshield init [PATH]``.

Two self-contained argparse entry points, `run_main(argv)` and
`init_main(argv)`, each returning the exit status (0 success, 1 an
unexpected failure, 2 bad input: a one-line ``fedshield run: error: ...`` on
stderr). ``python -m core.pilot.commands run|init ...`` runs them directly.

Output modes of ``run``: by default a progress bar over rounds (tqdm, on a
terminal) with the latest test accuracy and ε, a line per round, and a final
summary; ``--quiet`` prints only the summary; ``--json`` prints JSON lines
only on stdout (one per round, messages, and a final ``"summary"`` line).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from statistics import mean
from typing import Any, TextIO

from core.errors import ConfigError
from core.pilot.report import PilotReport, TestScores, describe_mode, fmt
from core.pilot.schema import PilotConfig, load_config, parse_config, to_plain
from core.reporting import ConsoleReporter, RoundRecord

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "PilotProgress", "apply_overrides", "init_main", "main", "run_main", "summary_lines"
]


def apply_overrides(cfg: PilotConfig, assignments: Sequence[str]) -> PilotConfig:
    """Apply ``--set table.key=value`` assignments (value in TOML syntax; a
    bare word is a string) on top of `cfg`, then validate the result exactly
    like a file (all at once, so related fields can change together)."""
    tables = to_plain(cfg)
    for assignment in assignments:
        target, sep, text = assignment.partition("=")
        name, dot, key = target.strip().partition(".")
        if not sep or not dot:
            raise ConfigError(
                f"--set needs TABLE.KEY=VALUE (e.g. federation.rounds=3); found "
                f"{assignment!r}"
            )
        try:
            value = tomllib.loads(f"x = {text.strip()}")["x"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        tables.setdefault(name, {})[key] = value  # unknown names: parse_config
    return parse_config(tables)


class PilotProgress(ConsoleReporter):
    """`ConsoleReporter` with accuracy and ε in the bar's postfix, and a JSON
    mode that writes every event as one JSON line on `stream`."""

    def __init__(self, *, stream: TextIO | None = None, quiet: bool = False,
                 as_json: bool = False) -> None:
        super().__init__(stream=stream, quiet=quiet or as_json)
        self._json = as_json
        self._out = stream if stream is not None else sys.stdout

    def start(self, *, first_round: int, total_rounds: int) -> None:
        """Open the bar (on stderr, when it is a terminal and not quiet)."""
        if self._json:
            return
        super().start(first_round=first_round, total_rounds=total_rounds)
        if self._bar is not None:
            self._bar.set_description("fedshield rounds")

    def round(self, record: RoundRecord) -> None:
        """Report a round; the bar shows the latest accuracy and mean ε."""
        if self._json:
            self._emit(record.to_json())
            return
        if self._bar is not None:
            postfix: dict[str, str] = {}
            if record.eval_accuracy is not None:
                postfix["acc"] = f"{record.eval_accuracy:.3f}"
            # The DP trainer's aggregate ε: the largest one when reported.
            for key in ("epsilon_max", "epsilon"):
                if key in record.metrics:
                    postfix["ε"] = f"{record.metrics[key]:.2f}"
                    break
            self._bar.set_postfix(postfix, refresh=False)
        super().round(record)

    def message(self, text: str) -> None:
        """A line of text (a JSON ``message`` line in JSON mode)."""
        if self._json:
            self._emit({"type": "message", "text": text})
        else:
            super().message(text)

    def _emit(self, obj: dict[str, Any]) -> None:
        print(json.dumps(obj, default=str), file=self._out, flush=True)


def summary_lines(report: PilotReport) -> list[str]:
    """The end-of-run text: accuracy comparison, privacy summary, report path."""
    cfg = report.config
    lines = [
        f"federated ({describe_mode(cfg)}) test accuracy "
        f"{report.federated_accuracy:.3f}"
        + (
            ""
            if report.centralised_accuracy is None
            else f" | centralised non-private {report.centralised_accuracy:.3f}"
            f" | gap {report.gap_points:.1f} pts"
        )
        + f" | majority class {report.majority_rate:.3f}",
        f"federated: {_pair(report.federated)}"
        + ("" if report.centralised is None
           else f" | centralised: {_pair(report.centralised)}"),
        f"rounds {report.rounds_completed}/{cfg.federation.rounds} in "
        f"{report.seconds:.1f} s",
    ]
    if report.stopped_early:
        lines.append(f"stopped early: {report.stopped_early}")
    if cfg.privacy.enabled:
        spent = [i.epsilon_spent or 0.0 for i in report.institutions]
        lines.append(
            f"privacy: ε spent per institution {min(spent):.2f}–{max(spent):.2f} "
            f"of budget {cfg.privacy.epsilon_budget:g} (δ={cfg.privacy.delta:g})"
        )
        lines.extend(
            f"  {i.name}: ε {fmt(i.epsilon_spent, '.2f')} / "
            f"{fmt(i.epsilon_budget, 'g')} over {i.rounds_trained} rounds"
            for i in report.institutions
        )
    done = [c for c in report.coordinator if c.aborted is None]
    dropped = sum(c.dropped for c in done)
    lines.append(
        "coordinator saw only sums: Σ weights and Σ weighted updates, "
        f"{len(done)} rounds; {dropped} dropouts survived; aborted rounds "
        f"(too few survivors, model unchanged): "
        f"{sum(1 for c in report.coordinator if c.aborted)}"
    )
    sent = [i.mean_bytes_sent for i in report.institutions if i.mean_bytes_sent]
    if sent:
        lines.append(
            f"bytes sent per institution per round: {mean(sent):,.0f} "
            f"(float32 plaintext update {report.plaintext_bytes:,} B, "
            f"×{mean(sent) / report.plaintext_bytes:.1f})"
        )
    lines.append(f"report: {report.run_dir / 'report.md'}")
    return lines


def _pair(scores: TestScores) -> str:
    return (f"balanced accuracy {scores.balanced_accuracy:.3f}, ROC AUC "
            f"{fmt(scores.roc_auc)}")


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedshield run",
        description="Run a federated pilot described by a TOML config: DP-SGD "
        "per institution and secure aggregation (both on by default), a "
        "centralised non-private baseline, and a run folder with metrics, "
        "privacy ledgers, the final model, plots and report.md. "
        "`fedshield init` writes a commented example config.",
        epilog="The run folder is built as OUTPUT.partial and renamed to OUTPUT "
        "once report.md (written last) exists; on any error it is removed, so "
        "a folder without .partial is always a complete run. Exit status: 0 "
        "done, 2 bad config or data (one line on stderr), 1 unexpected failure.",
    )
    p.add_argument("config", type=Path, help="the pilot's TOML config")
    p.add_argument("--output", metavar="DIR",
                   help="run folder (overrides run.output_dir)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="TABLE.KEY=VALUE",
                   help="override one config value, e.g. federation.rounds=3 "
                   "(repeatable; VALUE in TOML syntax)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quiet", action="store_true",
                      help="print only the final summary")
    mode.add_argument("--json", action="store_true",
                      help="JSON lines only on stdout (rounds, then a summary)")
    return p


def _fail(prog: str, message: str, code: int) -> int:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"{prog}: error: {first}", file=sys.stderr)
    return code


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]
           ) -> argparse.Namespace | int:
    try:
        return parser.parse_args(list(argv))
    except SystemExit as exc:  # --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2


def run_main(argv: list[str]) -> int:
    """``fedshield run``: run a pilot from a config; returns the exit status."""
    args = _parse(_run_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        cfg = load_config(args.config)
        output = [f"run.output_dir={json.dumps(args.output)}"] if args.output else []
        cfg = apply_overrides(cfg, [*args.overrides, *output])
        from core.pilot.runner import (
            run_pilot,  # torch & co. only once the config is good
        )

        progress = PilotProgress(quiet=args.quiet, as_json=args.json)
        report = run_pilot(cfg, reporter=progress)
    except ConfigError as exc:
        return _fail("fedshield run", str(exc), 2)
    except KeyboardInterrupt:
        return _fail("fedshield run", "interrupted; no run folder was kept", 130)
    except Exception as exc:  # a bug or a broken environment, not bad input
        return _fail("fedshield run", f"{type(exc).__name__}: {exc}", 1)
    if args.json:
        print(json.dumps(report.to_json()), flush=True)
    else:
        print("\n".join(summary_lines(report)), flush=True)
    return 0


INIT_TEMPLATE = """\
# fedshield pilot config. Run it with:  fedshield run {name}
# Every key is optional; the values below are the defaults.

[run]
name = "pilot"
output_dir = "runs/pilot"       # built as <output_dir>.partial, renamed when done
seed = 0                        # seeds the split, the model and the sampling
centralised_baseline = true     # also train on the pooled data, non-privately

[data]
source = "breast_cancer"        # "breast_cancer" | "rdataset" | "csv"
package = ""                    # rdataset: R package, e.g. "COUNT"
dataset = ""                    # rdataset: table, e.g. "azpro"
path = ""                       # csv: file (relative to this config)
label = ""                      # label column (breast_cancer: "diagnosis")
site = ""                       # column naming each row's institution
features = []                   # feature columns ([] = all other columns)
drop = []                       # columns never used as features
test_fraction = 0.25            # held-out rows (stratified by label)
max_rows = 0                    # > 0: a seeded random subset (smoke tests)

[split]
method = "dirichlet"            # "iid" | "dirichlet" | "quantity_skew" | "natural"
num_clients = 5                 # ignored by "natural" (one per site)
alpha = 0.5                     # Dirichlet concentration: small = skewed
min_client_rows = 20            # resample the split until each has this many
min_site_rows = 0               # natural: pool smaller sites into "other"
client_label = "client"         # synthetic institutions: "client 1", ...

[model]
kind = "logistic"               # "logistic" | "mlp"
hidden_units = 32               # mlp only
hidden_layers = 1               # mlp only

[federation]
rounds = 10
clients_per_round = 0           # 0 = every institution every round
server_learning_rate = 1.0
server_momentum = 0.0

[training]
local_epochs = 1
batch_size = 16                 # expected Poisson batch size under DP
learning_rate = 0.5

[privacy]
enabled = true                  # DP-SGD at every institution
target_epsilon = 4.0            # calibrate σ to reach this after all rounds
noise_multiplier = 0.0          # or set σ here (then target_epsilon = 0.0)
delta = 1e-4                    # must be below 1 / (largest institution's rows)
max_grad_norm = 1.0             # per-example clipping norm
epsilon_budget = 8.0            # an institution stops before exceeding it

[secure_aggregation]
enabled = true
mode = "semi-honest"            # or "hardened": signed identities + consistency
dropout_tolerance = 0.3         # share of the cohort that may drop (sets t)
corrupt_fraction = 0.0          # share assumed to collude with the coordinator
ring_bits = 48                  # ring Z_2^k; must hold the weighted sum
value_bits = 16                 # quantisation of each update coordinate
clip = 1.0                      # update coordinates clipped to [-clip, clip]
max_weight = 0                  # cap on an institution's weight (0 = largest)
dropout_rate = 0.0              # simulate institutions dropping mid-protocol
"""


def init_main(argv: list[str]) -> int:
    """``fedshield init [PATH]``: write a commented example config."""
    p = argparse.ArgumentParser(
        prog="fedshield init",
        description="Write a commented example pilot config (every key, with "
        "its default) for `fedshield run`.",
    )
    p.add_argument("path", nargs="?", type=Path, default=Path("fedshield.toml"),
                   help="where to write it (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = _parse(p, argv)
    if isinstance(args, int):
        return args
    path: Path = args.path
    if path.exists() and not args.force:
        return _fail("fedshield init", f"{path} exists; use --force to overwrite", 2)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(INIT_TEMPLATE.format(name=path), encoding="utf-8")
    except OSError as exc:
        return _fail("fedshield init", f"cannot write {path}: {exc}", 2)
    print(f"wrote {path}; run it with: fedshield run {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m core.pilot.commands run|init ...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {"run": run_main, "init": init_main}
    if not args or args[0] not in commands:
        print("usage: python -m core.pilot.commands {run,init} ...", file=sys.stderr)
        return 2
    return commands[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
