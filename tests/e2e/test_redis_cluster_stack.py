"""The local stack's Redis Cluster (Redis 7+): three masters with a replica each,
formed once; a master killed with SIGKILL is replaced by its replica, and started
again it rejoins as a replica. Data written through the cluster stays readable."""

from __future__ import annotations

import time

from redis.cluster import RedisCluster

from e2e.redis_cluster import cluster_state, role
from e2e.stack import LocalStack


def _wait(predicate: object, what: str, timeout: float = 30.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f}s"
        time.sleep(0.2)


def test_the_cluster_forms_fails_over_and_keeps_its_data(redis_cluster: LocalStack) -> None:
    cluster = redis_cluster
    ports = cluster.redis_cluster_ports
    assert all(cluster_state(port) == "ok" for port in ports)
    assert sorted(role(port) for port in ports) == ["master"] * 3 + ["slave"] * 3
    client = RedisCluster(host="127.0.0.1", port=ports[0])
    try:
        for n in range(300):  # keys on every master
            client.set(f"k:{n}", n)
        master = next(n for n, port in enumerate(ports, start=1)
                      if role(port) == "master" and client.dbsize(
                          target_nodes=client.get_node("127.0.0.1", port)) > 0)
        cluster.kill(f"redis-{master}")
        alive = [port for n, port in enumerate(ports, start=1) if n != master]
        # its replica is promoted: three masters again, the cluster ok
        _wait(lambda: sum(role(p) == "master" for p in alive) == 3
              and all(cluster_state(p) == "ok" for p in alive), "the failover")
        client.close()
        client = RedisCluster(host="127.0.0.1", port=alive[0])
        assert [int(client.get(f"k:{n}") or -1) for n in range(300)] == list(range(300))
        cluster.start_service(f"redis-{master}")  # back, as a replica of the promoted one
        _wait(lambda: role(ports[master - 1]) == "slave", "the old master's rejoining")
        _wait(lambda: all(cluster_state(p) == "ok" for p in ports), "a whole cluster again")
    finally:
        client.close()
