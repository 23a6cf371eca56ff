"""A Redis Cluster on this machine: three masters with one replica each, as processes.

Redis Cluster needs a server of Redis 7 or later (sharded pub/sub); the wheel's
``redis-server`` is 6.2, so the nodes run Debian's (``apt-get install
redis-server``) or the one ``AGENTCHAT_REDIS7_SERVER`` names. Each node keeps its
own ``nodes.conf`` and append-only file under the stack's root, so a node killed
and started again rejoins as it was (a replica of whoever was promoted meanwhile).
:func:`form_cluster` creates the cluster once, with ``redis-cli --cluster create``,
and waits until every node says ``cluster_state:ok``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis
from redis.crc import key_slot

from e2e.readiness import redis_command

__all__ = ["CLUSTER_NODES", "cluster_server_bin", "cluster_state", "form_cluster",
           "in_sync", "master_of", "node_command", "role"]

#: three masters, each with one replica
CLUSTER_NODES = 6
#: how long a master may be unreachable before its replica is promoted
NODE_TIMEOUT_MS = 2000
_HOW = ("install a Redis 7+ server (`apt-get install redis-server`, as root) or set "
        "AGENTCHAT_REDIS7_SERVER to one")


def cluster_server_bin() -> Path:
    """A ``redis-server`` of Redis 7 or later, or a :class:`RuntimeError` saying how to
    get one."""
    named = os.environ.get("AGENTCHAT_REDIS7_SERVER") or shutil.which("redis-server") \
        or "/usr/bin/redis-server"
    path = Path(named)
    if not path.is_file():
        raise RuntimeError(f"a Redis Cluster needs a Redis 7+ server: none found; {_HOW}")
    version = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                             check=False).stdout
    found = re.search(r"v=(\d+)\.", version)
    if found is None or int(found.group(1)) < 7:
        raise RuntimeError(f"a Redis Cluster needs Redis 7 or later; {path} is "
                           f"{version.strip() or 'unknown'}; {_HOW}")
    return path


def _cli(server: Path) -> Path:
    return server.with_name("redis-cli")


def _reply(port: int, *command: str) -> str:
    """The node's reply as text ('' if it does not answer)."""
    try:
        return redis_command(port, *command).decode(errors="replace")
    except OSError:
        return ""


def _found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    return match.group(1) if match else ""


def cluster_state(port: int) -> str:
    """``ok`` or ``fail`` as the node on ``port`` sees the cluster ('' if it does not
    answer)."""
    return _found(r"cluster_state:(\w+)", _reply(port, "CLUSTER", "INFO"))


def role(port: int) -> str:
    """``master`` or ``slave`` ('' if the node does not answer)."""
    return _found(r"(master|slave)", _reply(port, "ROLE"))


def in_sync(port: int) -> bool:
    """A master, or a replica whose link to its master is up (it can take over)."""
    reply = _reply(port, "INFO", "replication")
    return "role:master" in reply or "master_link_status:up" in reply


def master_of(ports: Sequence[int], key: str) -> int:
    """The port of the master that holds ``key``'s slot now, as the first node that
    answers sees it."""
    slot = key_slot(key.encode())
    for port in ports:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        try:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        except (redis.RedisError, OSError):
            continue
        finally:
            client.close()
        for start, end, master, *_ in ranges:
            if int(start) <= slot <= int(end):
                return int(master[1])
    raise RuntimeError(f"no node of {list(ports)} tells who holds slot {slot}")


def form_cluster(ports: Sequence[int], *, timeout_s: float = 30.0) -> None:
    """Create the cluster over ``ports`` unless its nodes already know each other,
    then wait until every node sees it ``ok`` and every replica is in sync with its
    master (before that, a replica cannot take over a failed master)."""
    if "cluster_known_nodes:1\r" in _reply(ports[0], "CLUSTER", "INFO"):
        result = subprocess.run(
            [str(_cli(cluster_server_bin())), "--cluster", "create",
             *(f"127.0.0.1:{port}" for port in ports), "--cluster-replicas", "1",
             "--cluster-yes"], capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{result.stdout[-2000:]}"
                               f"{result.stderr[-2000:]}")
    deadline = time.monotonic() + timeout_s
    while not all(cluster_state(port) == "ok" and in_sync(port) for port in ports):
        if time.monotonic() > deadline:
            states = {port: cluster_state(port) or "no answer" for port in ports}
            raise RuntimeError(f"the Redis Cluster did not become ok in {timeout_s:.0f}s: "
                               f"{states}")
        time.sleep(0.2)


def node_command(port: int, bus_port: int, data: Path, maxmemory: str) -> list[str]:
    """The command line of one cluster node keeping its state in ``data``; the nodes
    talk on ``bus_port`` (set, not port + 10,000: that can be past 65,535)."""
    return [str(cluster_server_bin()), "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(data), "--cluster-enabled", "yes", "--cluster-port", str(bus_port),
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--repl-diskless-sync-delay", "0",
            "--protected-mode", "yes", "--logfile", "",
            "--maxmemory", maxmemory, "--maxmemory-policy", "noeviction"]
