"""FastAPI dependencies: the shared state and the caller's identity."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backend.shared import BackendState
from backend.tokens import InvalidToken, Principal
from servicekit import ProblemError

__all__ = ["CurrentUser", "State"]

_bearer = HTTPBearer(auto_error=False)


# a coroutine: FastAPI would run a plain function on a worker thread, per request
async def get_state(request: Request) -> BackendState:
    state: BackendState = request.app.state.backend
    return state


State = Annotated[BackendState, Depends(get_state)]


async def current_user(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise ProblemError(401, "unauthorized", "a bearer access token is required",
                           {"WWW-Authenticate": "Bearer"})
    try:
        return await state.verifier.verify(credentials.credentials)
    except InvalidToken as exc:
        raise ProblemError(401, "unauthorized", f"invalid access token: {exc}",
                           {"WWW-Authenticate": "Bearer"}) from None


CurrentUser = Annotated[Principal, Depends(current_user)]
