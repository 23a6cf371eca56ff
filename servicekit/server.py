"""Running an app under uvicorn with a graceful-shutdown hook.

uvicorn fails open WebSockets with 1012 on shutdown; the hook runs first, so a
service can close its sockets the way its protocol says (the backend: 1001).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

__all__ = ["serve"]


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config,
                 before_shutdown: Callable[[], Awaitable[None]] | None) -> None:
        super().__init__(config)
        self._before_shutdown = before_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._before_shutdown is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._before_shutdown(), 5.0)
        await super().shutdown(sockets)


def serve(app: Any, *, host: str, port: int, log_level: str,
          before_shutdown: Callable[[], Awaitable[None]] | None = None,
          **options: Any) -> None:
    # keep-alive longer than clients' and proxies' idle timeouts (httpx: 5 s, common
    # load balancers: 60 s): the server never closes a connection a client is
    # about to reuse, which would fail that request
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, log_config=None,
                            timeout_graceful_shutdown=10, timeout_keep_alive=75, **options)
    _Server(config, before_shutdown).run()
