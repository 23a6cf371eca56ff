"""The Redis names and the compose stack's Redis ACL agree: every name a service
uses is granted to it (deploy/redis/start.sh), and a name it does not use is not."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from pathlib import Path
from zlib import crc32

import pytest
from redis.crc import key_slot

from servicekit.rediskeys import (
    AGENTS_CATALOG,
    CANCEL_CHANNEL,
    CLUSTER_SHARDS,
    DEAD_STREAM,
    HUB_CONTROL_CHANNEL,
    INGEST_STREAM,
    LIFECYCLE_STREAM,
    REAPER_LOCK,
    REVOCATION_CHANNEL,
    RUN_QUEUE,
    StreamShards,
    UserKeys,
    cancel_key,
    lease_key,
    revoked_session_key,
    throttle_account_key,
    throttle_address_key,
    throttle_register_key,
    worker_alive_key,
    ws_ticket_key,
)

START = Path(__file__).parents[2] / "deploy" / "redis" / "start.sh"
USER = UserKeys("usr_01J")
USER_KEYS = [USER.meta, USER.history, USER.run("run_1"), USER.sockets, USER.quota("usage", 1)]
AUTH_KEYS = [throttle_account_key("d1"), throttle_address_key("203.0.113.9"),
             throttle_register_key("203.0.113.9"), revoked_session_key("ses_1"),
             ws_ticket_key("t1")]

#: service -> (keys it uses, channels it uses)
USES: dict[str, tuple[list[str], list[str]]] = {
    "auth": (AUTH_KEYS, [REVOCATION_CHANNEL]),
    "backend": ([*USER_KEYS, RUN_QUEUE, LIFECYCLE_STREAM, lease_key("run_1"),
                 cancel_key("run_1"), AGENTS_CATALOG, INGEST_STREAM, DEAD_STREAM, REAPER_LOCK,
                 worker_alive_key("w1"), revoked_session_key("ses_1"), ws_ticket_key("t1")],
                [USER.channel, HUB_CONTROL_CHANNEL, CANCEL_CHANNEL, REVOCATION_CHANNEL]),
    "worker": ([USER.meta, USER.history, USER.run("run_1"), RUN_QUEUE, LIFECYCLE_STREAM,
                lease_key("run_1"), cancel_key("run_1"), worker_alive_key("w1"),
                AGENTS_CATALOG, INGEST_STREAM], [USER.channel, CANCEL_CHANNEL]),
}


def _grants() -> dict[str, tuple[list[str], list[str]]]:
    grants = {}
    for line in START.read_text().splitlines():
        match = re.match(r"user (auth|backend|worker) on ", line)
        if match:
            words = line.split()
            keys = [w.split("~", 1)[1] for w in words if "~" in w]
            channels = [w[1:] for w in words if w.startswith("&")]
            grants[match.group(1)] = (keys, channels)
    return grants


def _granted(name: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in patterns)


@pytest.mark.parametrize("service", sorted(USES))
def test_every_name_a_service_uses_is_granted(service: str) -> None:
    keys, channels = _grants()[service]
    used_keys, used_channels = USES[service]
    assert [k for k in used_keys if not _granted(k, keys)] == []
    assert [c for c in used_channels if not _granted(c, channels)] == []


def test_no_service_reaches_what_only_another_uses() -> None:
    grants = _grants()
    auth_keys, auth_channels = grants["auth"]
    assert not any(_granted(k, auth_keys) for k in [*USER_KEYS, RUN_QUEUE, lease_key("r")])
    assert not _granted(USER.channel, auth_channels)
    worker_keys, worker_channels = grants["worker"]
    assert not any(_granted(k, worker_keys) for k in [*AUTH_KEYS, REAPER_LOCK, DEAD_STREAM])
    assert not _granted(REVOCATION_CHANNEL, worker_channels)
    backend_keys, _ = grants["backend"]
    assert not any(_granted(k, backend_keys) for k in AUTH_KEYS[:3])  # the login throttle


# -- the shards of a stream on a Redis Cluster ------------------------------------------


def test_one_shard_keeps_the_plain_name() -> None:
    for shards in (StreamShards(RUN_QUEUE), StreamShards.of(RUN_QUEUE, cluster=False)):
        assert shards.count == 1
        assert shards.keys == (RUN_QUEUE,)
        assert shards.for_user("usr_01J") == RUN_QUEUE
        assert shards.any() == RUN_QUEUE


@pytest.mark.parametrize("name", [RUN_QUEUE, LIFECYCLE_STREAM, INGEST_STREAM])
def test_cluster_shards_have_distinct_names_on_distinct_slots(name: str) -> None:
    shards = StreamShards.of(name, cluster=True)
    assert shards.count == CLUSTER_SHARDS == 8
    assert shards.keys == tuple(f"{name}:{{{n}}}" for n in range(CLUSTER_SHARDS))
    assert len(set(shards.keys)) == CLUSTER_SHARDS
    assert len({key_slot(key.encode()) for key in shards.keys}) == CLUSTER_SHARDS


@pytest.mark.parametrize("name", [RUN_QUEUE, LIFECYCLE_STREAM, INGEST_STREAM])
def test_every_shard_is_on_the_slot_of_its_tag(name: str) -> None:
    for n, key in enumerate(StreamShards.of(name, cluster=True).keys):
        assert key_slot(key.encode()) == key_slot(str(n).encode())
        assert key_slot(key.encode()) == key_slot(f"{{{n}}}".encode())


def test_a_user_always_maps_to_the_same_shard() -> None:
    shards = StreamShards.of(LIFECYCLE_STREAM, cluster=True)
    users = [f"usr_{n:04d}" for n in range(200)]
    first = {user: shards.for_user(user) for user in users}
    # the same answer again, and from another instance (another process)
    assert {user: shards.for_user(user) for user in users} == first
    other = StreamShards(LIFECYCLE_STREAM, CLUSTER_SHARDS)
    assert {user: other.for_user(user) for user in users} == first
    assert set(first.values()) <= set(shards.keys)
    assert len(set(first.values())) == CLUSTER_SHARDS  # 200 users spread over them all
    assert shards.for_user("usr_01J") == f"{LIFECYCLE_STREAM}:{{{crc32(b'usr_01J') % 8}}}"
    # the queue's shard of a user has the same number (one function for all streams)
    queue = StreamShards.of(RUN_QUEUE, cluster=True)
    assert all(queue.for_user(u).rsplit(":", 1)[1] == first[u].rsplit(":", 1)[1] for u in users)


def test_any_shard_is_one_of_the_keys() -> None:
    shards = StreamShards.of(INGEST_STREAM, cluster=True)
    picked = {shards.any() for _ in range(400)}
    assert picked <= set(shards.keys)
    assert len(picked) > 1


def test_the_queue_watcher_reads_the_queue_alone() -> None:
    """The autoscaler's user (KEDA) may read the run queue's lengths, on one Redis
    and on every shard of a cluster, and nothing else: no write, no other key."""
    (line,) = [line for line in START.read_text().splitlines() if "user queuewatch on" in line]
    words = line.rstrip().removesuffix('" >> "$ACL"').split()
    keys = [w.split("~", 1)[1] for w in words if w.startswith("~")]
    assert [w for w in words if w.startswith(("+", "-"))] == [
        "-@all", "+@connection", "+xinfo", "+xpending", "+xlen"]
    assert all(_granted(k, keys) for k in StreamShards.of(RUN_QUEUE, cluster=True).keys)
    assert _granted(RUN_QUEUE, keys)
    assert not any(_granted(k, keys) for k in [*USER_KEYS, *AUTH_KEYS, LIFECYCLE_STREAM,
                                               INGEST_STREAM, lease_key("r")])
