"""The pilot application: ``fedshield run CONFIG.toml`` on top of the library.

* `core.pilot.schema` and `core.pilot.sections`: the TOML tables; the
  libraries' own tables become their config objects (`core.FederationConfig`,
  `core.LocalTrainingConfig`, `dp.DPConfig`, `secagg.SecAggSettings`);
* `core.pilot.config_file`: reading, ``--set``/``--unset`` overrides, and
  writing a config back (the ``fedshield init`` template included);
* `core.pilot.data`: the table, split into institutions;
* `core.pilot.plan`: what the data fixes (cohort, ε schedule, weight bound);
* `core.pilot.runner`, `core.pilot.baseline`: the federated run and the
  centralised baseline;
* `core.pilot.report`, `core.pilot.plots`, `core.pilot.progress`: what a run
  shows and leaves behind;
* `core.pilot.cli`, `core.pilot.commands`: the ``fedshield`` command.

Nothing here is imported by the library part of `core`, and this package
imports nothing heavy itself, so ``fedshield --help`` answers at once.
"""
