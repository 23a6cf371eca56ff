"""The HTTP calls of the auth service (contract: "Auth service")."""

from __future__ import annotations

import json
import secrets
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, EmailStr, Field

from auth.hashpool import Busy
from auth.policy import MIN_LENGTH, normalize_email, password_problem
from auth.shared import AuthState
from auth.store import EmailTaken, Reused, User, new_refresh_token
from auth.tokens import AccessClaims
from servicekit import ProblemError, StorableStr, problem_responses
from servicekit.rediskeys import revoked_session_key, ws_ticket_key
from servicekit.revocation import SessionsRevoked, announce

__all__ = ["router", "ws_ticket_key"]

router = APIRouter()
_bearer = HTTPBearer(auto_error=False)


# a coroutine: FastAPI would run a plain function on a worker thread, per request
async def get_state(request: Request) -> AuthState:
    state: AuthState = request.app.state.auth
    return state


State = Annotated[AuthState, Depends(get_state)]


async def current_claims(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AccessClaims:
    unauthorized = ProblemError(401, "unauthorized", "a valid access token is required",
                                {"WWW-Authenticate": "Bearer"})
    if credentials is None:
        raise unauthorized
    claims = state.tokens.verify(credentials.credentials)
    if claims is None or await state.redis.exists(revoked_session_key(claims.session_id)):
        raise unauthorized
    return claims


Claims = Annotated[AccessClaims, Depends(current_claims)]


# -- bodies and answers ------------------------------------------------------------------
class RegisterBody(BaseModel):
    email: EmailStr
    password: StorableStr = Field(min_length=MIN_LENGTH, max_length=1024)
    display_name: StorableStr = Field(default="", max_length=100)


class LoginBody(BaseModel):
    email: StorableStr = Field(min_length=1, max_length=320)
    password: StorableStr = Field(min_length=1, max_length=1024)


class RefreshBody(BaseModel):
    refresh_token: StorableStr = Field(min_length=1, max_length=256)


class UserOut(BaseModel):
    id: str
    email: str
    display_name: str
    created_at: datetime


class UserEnvelope(BaseModel):
    user: UserOut


class TokenPair(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    refresh_token: str


class LoginOut(TokenPair):
    user: UserOut


class SessionOut(BaseModel):
    id: str
    created_at: datetime
    last_used_at: datetime
    user_agent: str
    current: bool


class TicketOut(BaseModel):
    ticket: str
    expires_in: int


class Jwks(BaseModel):
    keys: list[dict[str, Any]]


def _user(user: User) -> UserOut:
    return UserOut(id=user.id, email=user.email, display_name=user.display_name,
                   created_at=user.created_at)


def _pair(state: AuthState, user_id: str, session_id: str, refresh_token: str) -> TokenPair:
    return TokenPair(access_token=state.tokens.issue(user_id, session_id),
                     expires_in=state.settings.access_token_ttl_s, refresh_token=refresh_token)


async def _revoke(state: AuthState, session_ids: list[str]) -> None:
    """Mark sessions revoked where every verifier looks (Redis), for the token lifetime,
    then announce it, so every backend closes the sessions' sockets at once."""
    if session_ids:
        async with state.redis.pipeline(transaction=False) as pipe:
            for session_id in session_ids:
                pipe.set(revoked_session_key(session_id), "1", ex=state.settings.access_token_ttl_s)
            await pipe.execute()
        await announce(state.redis, SessionsRevoked(tuple(session_ids)))


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# -- calls -------------------------------------------------------------------------------
@router.post("/auth/register", status_code=201, response_model=UserEnvelope,
             responses=problem_responses(409, 429))
async def register(body: RegisterBody, request: Request, state: State) -> UserEnvelope:
    email, address = normalize_email(body.email), _client_address(request)
    problem = password_problem(body.password, email)
    if problem is not None:
        raise ProblemError(422, "weak_password", problem)
    wait = await state.register_throttle.reserve(address)
    if wait:
        raise ProblemError(429, "too_many_requests",
                           f"too many registrations from this address; retry in {wait} s",
                           {"Retry-After": str(wait)})
    try:
        password_hash = await state.passwords.hash(body.password, "register")
    except Busy:
        await state.register_throttle.give_back(address)
        raise
    try:
        user = await state.store.create_user(email, password_hash, body.display_name.strip())
    except EmailTaken:
        raise ProblemError(409, "email_taken", "an account with this email exists") from None
    return UserEnvelope(user=_user(user))


@router.post("/auth/login", response_model=LoginOut, responses=problem_responses(401, 429))
async def login(body: LoginBody, request: Request, state: State) -> LoginOut:
    email, address = normalize_email(body.email), _client_address(request)
    # counted as a failure before the password check, atomically: a burst cannot
    # slip more than the free attempts past the throttle
    wait = await state.throttle.reserve(email, address)
    if wait:
        raise ProblemError(429, "too_many_attempts",
                           f"too many failed logins; retry in {wait} s", {"Retry-After": str(wait)})
    found = await state.store.user_by_email(email)
    user, password_hash = found if found else (None, None)
    try:
        verified = await state.passwords.verify(password_hash, body.password)
    except Busy:
        await state.throttle.give_back(email, address)
        raise
    if not verified or user is None:
        raise ProblemError(401, "invalid_credentials", "email or password is wrong")
    await state.throttle.succeeded(email, address)
    if password_hash and state.passwords.needs_rehash(password_hash):
        with suppress(Busy):  # the lane is full: the upgrade waits for the next login
            await state.store.update_password_hash(
                user.id, await state.passwords.hash(body.password, "login"))
    refresh_token = new_refresh_token()
    session_id = await state.store.create_session(
        user.id, request.headers.get("user-agent", ""), address,
        timedelta(seconds=state.settings.refresh_token_ttl_s), refresh_token)
    pair = _pair(state, user.id, session_id, refresh_token)
    return LoginOut(**pair.model_dump(), user=_user(user))


@router.post("/auth/refresh", response_model=TokenPair, responses=problem_responses(401))
async def refresh(body: RefreshBody, state: State) -> TokenPair:
    new_token = new_refresh_token()
    outcome = await state.store.rotate_refresh_token(
        body.refresh_token, new_token, grace_s=state.settings.refresh_reuse_grace_s)
    if isinstance(outcome, Reused):
        await _revoke(state, [outcome.session_id])
        raise ProblemError(401, "refresh_token_reused",
                           "this refresh token was already used; the session is revoked")
    if isinstance(outcome, str):
        raise ProblemError(401, "invalid_refresh_token", "the refresh token is not valid")
    session_id, user_id = outcome
    return _pair(state, user_id, session_id, new_token)


@router.post("/auth/logout", status_code=204, responses=problem_responses(401))
async def logout(claims: Claims, state: State) -> Response:
    await _revoke(state, await state.store.revoke_sessions(claims.user_id, claims.session_id))
    return Response(status_code=204)


@router.post("/auth/logout-all", status_code=204, responses=problem_responses(401))
async def logout_all(claims: Claims, state: State) -> Response:
    await _revoke(state, await state.store.revoke_sessions(claims.user_id))
    return Response(status_code=204)


@router.get("/auth/me", response_model=UserEnvelope, responses=problem_responses(401))
async def me(claims: Claims, state: State) -> UserEnvelope:
    user = await state.store.user_by_id(claims.user_id)
    if user is None:
        raise ProblemError(401, "unauthorized", "the account no longer exists")
    return UserEnvelope(user=_user(user))


@router.get("/auth/sessions", response_model=list[SessionOut], responses=problem_responses(401))
async def sessions(claims: Claims, state: State) -> list[SessionOut]:
    return [SessionOut(id=row["id"], created_at=row["created_at"],
                       last_used_at=row["last_used_at"], user_agent=row["user_agent"],
                       current=row["id"] == claims.session_id)
            for row in await state.store.sessions(claims.user_id)]


@router.delete("/auth/sessions/{session_id}", status_code=204,
               responses=problem_responses(401, 404))
async def delete_session(session_id: str, claims: Claims, state: State) -> Response:
    revoked = await state.store.revoke_sessions(claims.user_id, session_id)
    if not revoked:
        raise ProblemError(404, "not_found", "no such session")
    await _revoke(state, revoked)
    return Response(status_code=204)


@router.post("/auth/ws-ticket", response_model=TicketOut, responses=problem_responses(401))
async def ws_ticket(claims: Claims, state: State) -> TicketOut:
    """A single-use ticket for the first message of a WebSocket, bound to this session."""
    ticket = secrets.token_urlsafe(32)
    ttl = state.settings.ws_ticket_ttl_s
    # the socket's authorization ends with the token's: its expiry and key go along
    data = {"user_id": claims.user_id, "sid": claims.session_id, "exp": claims.expires_at,
            "kid": claims.key_id}
    await state.redis.set(ws_ticket_key(ticket), json.dumps(data), ex=ttl)
    return TicketOut(ticket=ticket, expires_in=ttl)


@router.get("/.well-known/jwks.json", response_model=Jwks)
async def jwks(state: State, response: Response) -> Jwks:
    response.headers["Cache-Control"] = "public, max-age=60"
    return Jwks(**state.keys.jwks())
