"""Keras models as files and recipes: loading, architecture checks, recipes and replica
training, weight matching, export of beads.

May import: keras (loading, building, fitting, permuting a model's units), `engine`,
`data`, `store`, `errors`, `progress`, `seeds`. `models.files` and `models.minimum` import
no framework (checks that run before TensorFlow loads; the `Minimum` data type).
"""
