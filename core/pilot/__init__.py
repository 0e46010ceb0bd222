"""The pilot application: ``fedshield run CONFIG.toml`` on top of the library.

A pilot is one TOML file (`core.pilot.schema`) that builds the libraries' own
configuration objects, loads and splits a table into institutions
(`core.pilot.data`), runs the federation with DP-SGD and secure aggregation
(`core.pilot.runner`) and writes a run folder with plots and ``report.md``
(`core.pilot.report`). `core.pilot.cli` is the ``fedshield`` command.

Nothing here is imported by the library part of `core`.
"""
