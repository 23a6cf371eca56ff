"""Exceptions of the bridge package.

    BridgeError
    ├── EmitError        an event could not be stored and published (Redis unreachable
    │                    for longer than the emit timeout, or the emit buffer is full)
    ├── RunFinished      the run already has its terminal event (another process ended it)
    ├── InvariantError   a run tried to break the event invariants of the contract
    ├── IngestBusy       the analytics ingest stream is full: nothing was appended
    └── ProtocolError    a client frame the server answers with an error frame
                         (:mod:`bridge.protocol`, beside the frames it answers)
"""

__all__ = ["BridgeError", "EmitError", "IngestBusy", "InvariantError", "RunFinished"]


class BridgeError(Exception):
    """Base class of every error raised by :mod:`bridge`."""


class EmitError(BridgeError):
    """The event could not be appended to the user's stream (Redis unreachable...)."""


class RunFinished(BridgeError):
    """The run already ended, e.g. it was declared lost while its worker was cut off."""


class InvariantError(BridgeError):
    """A run's events would break an invariant (event after terminal, second start...)."""


class IngestBusy(BridgeError):
    """The ingest stream is full: the rows were not appended; retry later."""
