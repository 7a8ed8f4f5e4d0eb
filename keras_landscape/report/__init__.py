"""Reports read back from a store: tables (`klandscape show`), figures (`klandscape
plot`), the probe reference (docs/probes.md).

May import: `store`, `registry` (probes own their tables and figures), matplotlib, numpy,
`errors`. Never imports keras, tensorflow or jax (tested by tests/test_layers.py).
"""
