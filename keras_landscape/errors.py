"""Errors that keras-landscape reports to users.

`UserError` is bad input: a missing or corrupt file, a malformed data spec, mismatched
architectures, an unknown probe or option. The CLI prints its message as one paragraph and
exits with code 2, never with a traceback. Anything else is an internal error (exit 1).
"""


class UserError(Exception):
    """Bad input, explained in one paragraph that says what is wrong and what is accepted."""


class ConfigError(UserError):
    """A bad key or value in a run config; the message starts with its key path."""


class NonFiniteLossError(UserError):
    """The loss evaluated to NaN or infinity where a finite value was required."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; `store` is the path of the partial store (resumable)."""

    def __init__(self, store: str):
        super().__init__(store)
        self.store = store
