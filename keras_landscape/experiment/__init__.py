"""Experiments: run specs, the runner that executes probes into a store, YAML run
configs, the demo.

May import every layer below it (engine, science, data, models, store, report, registry).
Only `cli/` and user scripts import it.
"""
