"""The Redis wire: every key, stream, consumer group and channel name of the project.

No other module writes a Redis name; each service imports the names it uses
from here. The compose stack's Redis ACL (``deploy/redis/start.sh``) grants each
service the patterns of the names it touches, and a test holds the two together.

Every key of one user carries the user id as a hash tag (``u:{usr_…}:``), so a
Redis Cluster keeps them on one slot: the emit script, which touches several of
them at once, stays atomic there.

On one Redis each stream is one key under the name below. On a Redis Cluster it
is :data:`CLUSTER_SHARDS` keys (``runs:queue:{3}``), spread over the cluster's
slots, each with its consumer group, and every consumer reads them all
(:class:`StreamShards`); a user's entries always go to the same shard, so a run's
start is applied before its end.

==========================  ======================  ==========================
name                        written by              read by
==========================  ======================  ==========================
``runs:queue`` (``workers``)     backend            workers
``runs:lifecycle`` (``backend``) workers, backend   backend
``analytics:ingest`` (``ingester``)  backend, workers  the analytics replica
``analytics:dead``          the analytics replica   operators
``runs:cancel`` (channel)   backend                 workers
``auth:revocations`` (ch.)  auth                    backends
``hub:control`` (channel)   backends                backends (liveness probe)
``u:{user}:…``              workers, backend        backend
``run:lease:…``, ``run:cancel:…``  workers, backend  backend, workers
``worker:alive:…``          workers                 backend (readiness), e2e
``agents:catalog``          workers                 backend
``reaper:lock``             backends                backends
``revoked:sid:…``           auth                    backends
``wsticket:…``              auth                    backends (redeemed once)
``throttle:…``              auth                    auth
==========================  ======================  ==========================
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

__all__ = [
    "AGENTS_CATALOG",
    "CANCEL_CHANNEL",
    "CLUSTER_SHARDS",
    "DEAD_STREAM",
    "HUB_CONTROL_CHANNEL",
    "INGEST_GROUP",
    "INGEST_STREAM",
    "LIFECYCLE_GROUP",
    "LIFECYCLE_STREAM",
    "REAPER_LOCK",
    "REVOCATION_CHANNEL",
    "RUN_QUEUE",
    "WORKER_GROUP",
    "StreamShards",
    "UserKeys",
    "cancel_key",
    "lease_key",
    "revoked_session_key",
    "throttle_account_key",
    "throttle_address_key",
    "throttle_register_key",
    "worker_alive_key",
    "ws_ticket_key",
]

# -- streams and their consumer groups -----------------------------------------------
#: the run queue: one entry per run to execute, each to one worker
RUN_QUEUE = "runs:queue"
WORKER_GROUP = "workers"
#: runs' status changes (agent_started, the terminal events), applied to Postgres
LIFECYCLE_STREAM = "runs:lifecycle"
LIFECYCLE_GROUP = "backend"
#: analytics rows on their way to ClickHouse, and those that could not be inserted
INGEST_STREAM = "analytics:ingest"
INGEST_GROUP = "ingester"
DEAD_STREAM = "analytics:dead"

#: how many shards each stream has on a Redis Cluster (fixed: every process must
#: agree, and a shard nobody reads would strand its entries)
CLUSTER_SHARDS = 8


@dataclass(frozen=True, slots=True)
class StreamShards:
    """The keys of one stream: ``count`` shards (one: the plain name)."""

    name: str
    count: int = 1

    @classmethod
    def of(cls, name: str, *, cluster: bool) -> StreamShards:
        return cls(name, CLUSTER_SHARDS if cluster else 1)

    @property
    def keys(self) -> tuple[str, ...]:
        if self.count == 1:
            return (self.name,)
        return tuple(f"{self.name}:{{{shard}}}" for shard in range(self.count))

    def for_user(self, user_id: str) -> str:
        """The shard of a user's entries (the same for all of them)."""
        if self.count == 1:
            return self.name
        return f"{self.name}:{{{zlib.crc32(user_id.encode()) % self.count}}}"

    def any(self) -> str:
        """A shard for an entry whose order does not matter (analytics rows)."""
        if self.count == 1:
            return self.name
        return f"{self.name}:{{{random.randrange(self.count)}}}"


# -- channels ------------------------------------------------------------------------
#: stop requests for running runs (the key :func:`cancel_key` is their safety net)
CANCEL_CHANNEL = "runs:cancel"
#: revoked sessions and signing keys, announced by auth
REVOCATION_CHANNEL = "auth:revocations"
#: a backend's own probe of its pub/sub link
HUB_CONTROL_CHANNEL = "hub:control"

# -- keys ----------------------------------------------------------------------------
#: hash: agent name -> its description, as the workers announce them
AGENTS_CATALOG = "agents:catalog"
#: one backend replica sweeps for lost runs per interval
REAPER_LOCK = "reaper:lock"


def lease_key(run_id: str) -> str:
    """Held by the worker executing the run, renewed while it runs."""
    return f"run:lease:{run_id}"


def cancel_key(run_id: str) -> str:
    """A stop requested for the run (``user`` or ``interrupt``)."""
    return f"run:cancel:{run_id}"


def worker_alive_key(worker_id: str) -> str:
    """A worker's heartbeat: its running runs, expiring unless renewed."""
    return f"worker:alive:{worker_id}"


def revoked_session_key(session_id: str) -> str:
    """Marks a session revoked until its tokens have expired."""
    return f"revoked:sid:{session_id}"


def ws_ticket_key(ticket: str) -> str:
    """A single-use WebSocket ticket: its claims, redeemed (deleted) once."""
    return f"wsticket:{ticket}"


# The throttle's keys share one hash tag: a login reserves an attempt of its account
# and of its address at once, in one script, on one slot of a Redis Cluster.
def throttle_account_key(digest: str) -> str:
    """Failed logins of one account (by a digest of its email)."""
    return f"throttle:{{login}}:account:{digest}"


def throttle_address_key(address: str) -> str:
    """Failed logins from one client address."""
    return f"throttle:{{login}}:address:{address}"


def throttle_register_key(address: str) -> str:
    """Registrations from one client address."""
    return f"throttle:{{login}}:register:{address}"


@dataclass(frozen=True, slots=True)
class UserKeys:
    """The keys and channel of one user, all on the user's Cluster slot."""

    user_id: str

    @property
    def _prefix(self) -> str:
        return f"u:{{{self.user_id}}}:"

    @property
    def meta(self) -> str:
        """Hash: the user's last ``seq``, ``epoch``, history ``bytes``, and the
        bytes written this hour (``ww``, ``wb``)."""
        return self._prefix + "meta"

    @property
    def history(self) -> str:
        """Stream of the user's events; entry id ``<seq>-0``."""
        return self._prefix + "events"

    @property
    def channel(self) -> str:
        """Pub/sub channel on which live events are published."""
        return self._prefix + "live"

    def run(self, run_id: str) -> str:
        """Hash of one run: events stored (``n``), ended (``done``), its queue entry
        (``q``; on a Redis Cluster also the entry that claimed the run, ``w``), its
        stored start and end (``st``; ``end``, ``et``, ``ep``), and
        while it waits for a tool approval the call (``wc``), its deadline (``wx``),
        the run's paused state (``ws``), the call as shown (``wp``) and the answer
        (``wa``): bridge/approvals.py."""
        return self._prefix + f"r:{run_id}"

    @property
    def sockets(self) -> str:
        """Sorted set of the user's open sockets across replicas (leases)."""
        return self._prefix + "sockets"

    def quota(self, name: str, window: int) -> str:
        """A per-user counter of one fixed window."""
        return self._prefix + f"quota:{name}:{window}"
