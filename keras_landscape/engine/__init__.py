"""The engine: the only layer that computes with Keras, TensorFlow or JAX.

May import: keras, `engine.backend` (the only modules that import tensorflow or jax),
numpy, and the layers below it (`errors`, `progress`, `seeds`, `data`). Never imports
science, models, store, report, experiment, plugins or cli.

Modules: `params` and `state` (a point's theta and state <-> a model's variables),
`objectives` (loss and level function), `kernels` (backend-neutral compiled kernels in
keras.ops), `stacked` (many parameter vectors through one graph walk), `landscape`
(`Landscape`: model + loss + level function + data -> E, level, gradient, projection; it
implements `keras_landscape.contract.LandscapeLike` as a facade over `setup`, `batches`,
`context`, `stacks`, `statistics`, `evaluation`, `gradients`, `projection` and `stepper`),
`projection` (train beads to a target level), `options` (the projection's settings as
plain data; importable without Keras).

This package's `__init__` imports nothing, so `engine.options` can be read without Keras.
"""
