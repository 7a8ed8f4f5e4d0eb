"""Built-in probes, installed as `keras_landscape.plugins`.

Each module registers its probe with `@register_probe` and is listed in setup.cfg's
`keras_landscape.probes` entry-point group, the same path a third-party plugin takes.
"""
