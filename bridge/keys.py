"""Redis key names of the event path.

Every key of one user carries the user id as a hash tag (``{usr_…}``), so that a
Redis Cluster keeps them on one slot and the emit script stays atomic there.
"""

from dataclasses import dataclass

__all__ = ["LIFECYCLE_STREAM", "UserKeys"]

#: Stream of run lifecycle events, consumed by the backend to update the runs table.
LIFECYCLE_STREAM = "runs:lifecycle"


@dataclass(frozen=True, slots=True)
class UserKeys:
    """The keys and channel of one user's event stream."""

    user_id: str

    @property
    def meta(self) -> str:
        """Hash with the user's last ``seq`` and current ``epoch``."""
        return f"u:{{{self.user_id}}}:meta"

    @property
    def history(self) -> str:
        """Stream of the user's events; entry id ``<seq>-0``."""
        return f"u:{{{self.user_id}}}:events"

    def run(self, run_id: str) -> str:
        """Hash of one run's emit state: events stored (``n``), ended (``done``)."""
        return f"u:{{{self.user_id}}}:r:{run_id}"

    @property
    def channel(self) -> str:
        """Pub/sub channel on which live events are published."""
        return f"u:{{{self.user_id}}}:live"
