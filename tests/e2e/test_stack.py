"""The stack manager's own promises: clear errors, single-service control."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from e2e.stack import LocalStack, StackConfig, StackError, StackPorts, free_port


def test_ports_handed_out_one_after_another_are_all_different() -> None:
    # the kernel hands out a port again once its probe closed: 500 draws of about
    # 28,000 ephemeral ports repeat one a few times on average
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)


@pytest.mark.parametrize(("port", "service"), [("redis", "redis"),
                                               ("backend_internal", "backend")])
def test_a_taken_port_is_named(tmp_path: Path, port: str, service: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        ports = dataclasses.replace(StackPorts.ephemeral(), **{port: taken})
        config = StackConfig(root=tmp_path, ports=ports)
        with pytest.raises(StackError, match=rf"{service}: port {taken} on 127.0.0.1 is "
                                             "already in use"):
            LocalStack(config).start()


@pytest.mark.servers  # starts Postgres, Redis, auth
def test_a_failing_service_is_named_with_its_log(tmp_path: Path) -> None:
    config = StackConfig.for_tests(tmp_path, startup_timeout_s=20,
                                   env={"AUTH_ACCESS_TOKEN_TTL_S": "not a number"})
    with pytest.raises(StackError) as caught:
        LocalStack(config).start(only=("postgres", "redis", "auth"))
    message = str(caught.value)
    assert message.startswith("auth did not become ready (auth /readyz answers 200)")
    assert "AUTH_ACCESS_TOKEN_TTL_S" in message  # the end of auth's log: the settings error


def test_kill_and_restart_one_service(redis_server: LocalStack) -> None:
    redis = redis_server.service("redis")
    old_pid = redis.process.pid
    redis_server.kill("redis")
    assert not redis.process.running()
    assert redis_server.start_service("redis") > 0
    assert redis.process.running() and redis.process.pid != old_pid
    with pytest.raises(StackError, match="already running"):
        redis_server.start_service("redis")
