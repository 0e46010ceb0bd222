"""The pilot application: ``fedshield run CONFIG.toml`` on top of the library.

* `core.pilot.schema`, `core.pilot.sections` and `core.pilot.library_help`:
  the TOML tables; the libraries' own tables become their config objects
  (`core.FederationConfig`, `core.LocalTrainingConfig`, `dp.DPConfig`,
  `secagg.SecAggSettings`);
* `core.pilot.config_file`: reading, ``--set``/``--unset`` overrides, and
  writing a config back (the ``fedshield init`` template included);
* `core.pilot.data`: the table, split into institutions, each preprocessed
  on its own rows;
* `core.pilot.plan`, `core.pilot.secagg_clip`: what the data fixes (cohort,
  ε schedule, weight bound, the secure-aggregation clip);
* `core.pilot.ledgers`: the institutions' ledgers across runs and the
  coordinator's record of their heads;
* `core.pilot.runner`, `core.pilot.baseline`: the federated run and the
  centralised baseline;
* `core.pilot.report`, `core.pilot.markdown`, `core.pilot.report_privacy`,
  `core.pilot.provenance`, `core.pilot.plots`, `core.pilot.progress`: what a
  run shows and leaves behind;
* `core.pilot.cli`, `core.pilot.commands`: the ``fedshield`` command.

Nothing here is imported by the library part of `core`, and this package
imports nothing heavy itself, so ``fedshield --help`` answers at once.
"""
