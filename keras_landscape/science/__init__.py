"""The science: Dynamic String Sampling, barriers, merge trees, pairs of minima.

May import: numpy, scipy, the base modules (`errors`, `progress`, `seeds`, `contract`, ...),
`engine.options` and `store.strings` (records written as work completes). Never imports
keras, tensorflow or jax: it computes through the landscape it is handed (levels,
projections, gradients), and uses nothing of it but `contract.LandscapeLike`, so the
algorithms read as the paper states them and run on any backend.
"""
