"""The science: Dynamic String Sampling, barriers, merge trees, pairs of minima.

May import: numpy, scipy, `errors`, `progress`, `seeds`, `engine.options` and `store`
(records written as work completes). Never imports keras, tensorflow or jax: it computes
through the `Landscape` it is handed (levels, projections, gradients), so the algorithms
read as the paper states them and run on any backend.
"""
