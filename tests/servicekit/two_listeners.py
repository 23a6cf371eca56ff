"""``python -m tests.servicekit.two_listeners JOURNAL PORT PORT``: two tiny apps served
by :func:`servicekit.server.serve`, writing what happens to JOURNAL, one line each."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from servicekit.server import Listener, serve


def main(journal_path: str, public_port: int, internal_port: int) -> None:
    journal = Path(journal_path)

    def note(line: str) -> None:
        with journal.open("a") as f:
            f.write(line + "\n")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[dict[str, str]]:
        note("startup")
        yield {"greeting": "hello"}
        note("shutdown")

    def greet(listener: str) -> Route:
        async def answer(request: Request) -> PlainTextResponse:
            return PlainTextResponse(f"{request.state.greeting} from {listener}")
        return Route("/", answer)

    async def slow(request: Request) -> PlainTextResponse:
        note("slow request started")
        await asyncio.sleep(float(request.query_params["s"]))
        note("slow request answered")
        return PlainTextResponse("slow")

    async def before_shutdown() -> None:
        note("before shutdown")

    public = Starlette(routes=[greet("public")], lifespan=lifespan)
    internal = Starlette(routes=[greet("internal"), Route("/slow", slow)])
    serve(Listener(public, "127.0.0.1", public_port),
          Listener(internal, "127.0.0.1", internal_port),
          log_level="warning", before_shutdown=before_shutdown)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
