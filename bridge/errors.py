"""Exceptions of the bridge package.

    BridgeError
    ├── EmitError        an event could not be stored and published
    └── InvariantError   a run tried to break the event invariants of the contract
"""

__all__ = ["BridgeError", "EmitError", "InvariantError"]


class BridgeError(Exception):
    """Base class of every error raised by :mod:`bridge`."""


class EmitError(BridgeError):
    """The event could not be appended to the user's stream (Redis unreachable...)."""


class InvariantError(BridgeError):
    """A run's events would break an invariant (event after terminal, second start...)."""
