"""The internal API: what the agent workers ask the backend on a user's behalf.

Workers call it with the shared service token (``BACKEND_INTERNAL_TOKEN``, the
worker's ``AGENTS_BACKEND_TOKEN``); the user is the run's owner, taken from the
run's context by the worker, never from a model's tool arguments. Without a
token configured, the internal API answers 404: it does not exist.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backend.api import From, ShortTokens, To, usage_answer
from backend.deps import State
from servicekit import ProblemError, StorableStr

__all__ = ["router"]

_bearer = HTTPBearer(auto_error=False)


async def _service(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = state.settings.internal_token
    if expected is None:
        raise ProblemError(404, "not_found", "no internal API on this backend")
    if credentials is None or not secrets.compare_digest(
            credentials.credentials.encode(), expected.get_secret_value().encode()):
        raise ProblemError(401, "unauthorized", "the service token is missing or wrong",
                           {"WWW-Authenticate": "Bearer"})


router = APIRouter(prefix="/internal/users/{user_id}", dependencies=[Depends(_service)],
                   include_in_schema=False)


@router.get("/usage")
async def usage(
    user_id: str, state: State, group_by: Literal["model", "day"] = "model",
    start: From = None, end: To = None,
    short_tokens: ShortTokens = None,
) -> dict[str, Any]:
    return await usage_answer(state, user_id, start, end, group_by, short_tokens)


@router.get("/messages")
async def search_messages(
    user_id: str, state: State, q: Annotated[StorableStr, Query(min_length=1, max_length=200)],
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> dict[str, Any]:
    return {"items": await state.store.search_messages(user_id, q, limit)}
