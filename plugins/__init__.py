"""Built-in probes, installed as `keras_landscape.plugins`.

Each probe module is listed in setup.cfg's
`keras_landscape.probes` entry-point group, the same path a third-party plugin takes.
"""
