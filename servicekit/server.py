"""Serving a process's ASGI apps under uvicorn: one or more listeners, one lifespan.

A service may answer on more than one address (its public API, and an internal
listener for metrics, readiness details and calls of other services). Each
listener is a uvicorn server in the same event loop; the lifespan of the first
listener's app runs once for all of them, so they share one set of pools and tasks.

One signal handler stops them all: first the ``before_shutdown`` hook (uvicorn
fails open WebSockets with 1012; the hook lets a service close its sockets the way
its protocol says, the backend: 1001), then every listener stops accepting and
drains its connections, then the lifespan ends. As under plain uvicorn, a caught
SIGINT or SIGTERM is raised again once everything stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Literal

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.lifespan.on import LifespanOn

from servicekit.heap import settle_heap

__all__ = ["Listener", "serve"]

log = logging.getLogger(__name__)

#: the signals that stop the process gracefully (a second SIGINT stops it at once)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class Listener:
    """An address the process answers on, the ASGI app that answers there, and
    uvicorn options of this listener only (``ws_max_size=…``, ``ws="none"``)."""

    app: Any
    host: str
    port: int
    options: Mapping[str, Any] = field(default_factory=dict)


def _config(listener: Listener, log_level: str,
            lifespan: Literal["on", "off"]) -> uvicorn.Config:
    # keep-alive longer than clients' and proxies' idle timeouts (httpx: 5 s, common
    # load balancers: 60 s): the server never closes a connection a client is
    # about to reuse, which would fail that request
    return uvicorn.Config(listener.app, host=listener.host, port=listener.port,
                          log_level=log_level, log_config=None, lifespan=lifespan,
                          timeout_graceful_shutdown=10, timeout_keep_alive=75,
                          **listener.options)


class _Server(uvicorn.Server):
    """A uvicorn server without a lifespan of its own: the process runs one for all
    its listeners, and each request's ``scope["state"]`` is that lifespan's state."""

    def __init__(self, config: uvicorn.Config, state: dict[str, Any]) -> None:
        super().__init__(config)
        config.load()
        self.lifespan = config.lifespan_class(config)
        self.lifespan.state = state


class _Process:
    def __init__(self, listeners: tuple[Listener, ...], log_level: str,
                 before_shutdown: Callable[[], Awaitable[None]] | None) -> None:
        self.lifespan = LifespanOn(_config(listeners[0], log_level, "on"))
        self.servers = [_Server(_config(listener, log_level, "off"), self.lifespan.state)
                        for listener in listeners]
        self.before_shutdown = before_shutdown
        self.signals: list[int] = []

    def on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.signals.append(sig)
        for server in self.servers:
            server.handle_exit(sig, frame)

    @contextlib.contextmanager
    def signals_caught(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only
            return
        previous = {sig: signal.signal(sig, self.on_signal) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @property
    def stopping(self) -> bool:
        return any(server.should_exit for server in self.servers)

    async def run(self) -> int:
        """Serve until a signal; the exit code (0, or uvicorn's startup failure)."""
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            return STARTUP_FAILURE
        settle_heap()
        code = 0
        try:
            if await self._start():
                await self._wait_for_stop()
            else:
                code = 0 if self.stopping else STARTUP_FAILURE
        finally:
            await self._stop()
        return code

    async def _start(self) -> bool:
        for server in self.servers:
            if self.stopping:
                return False
            try:
                await server.startup()
            except SystemExit:  # uvicorn's answer to an address it cannot bind (logged)
                return False
        return True

    async def _wait_for_stop(self) -> None:
        loops = [asyncio.create_task(server.main_loop()) for server in self.servers]
        await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
        for server in self.servers:  # one listener stopping stops them all
            server.should_exit = True
        await asyncio.gather(*loops)

    async def _stop(self) -> None:
        started = [server for server in self.servers if server.started]
        if started and self.before_shutdown is not None:
            try:
                await asyncio.wait_for(self.before_shutdown(), 5.0)
            except Exception:
                log.exception("the shutdown hook failed")
        await asyncio.gather(*(server.shutdown() for server in started))
        if not any(server.force_exit for server in self.servers):
            await self.lifespan.shutdown()


def serve(*listeners: Listener, log_level: str,
          before_shutdown: Callable[[], Awaitable[None]] | None = None) -> None:
    """Serve every listener until SIGINT or SIGTERM; the first one's app runs the
    lifespan. Exits with uvicorn's code 3 when the app or an address fails to start."""
    if not listeners:
        raise ValueError("serve needs at least one listener")
    process = _Process(listeners, log_level, before_shutdown)
    loop_factory = process.servers[0].config.get_loop_factory()
    with process.signals_caught(), asyncio.Runner(loop_factory=loop_factory) as runner:
        code = runner.run(process.run())
    for sig in reversed(process.signals):  # exit as the signal says, as uvicorn does
        signal.raise_signal(sig)
    if code:
        sys.exit(code)
