"""The HTTP calls of the auth service (contract: "Auth service")."""

from __future__ import annotations

import json
import secrets
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, EmailStr, Field

from auth.state import AuthState
from auth.store import EmailTaken, new_refresh_token
from auth.tokens import AccessClaims
from servicekit import ProblemError

__all__ = ["revocation_key", "router", "ws_ticket_key"]

router = APIRouter()
_bearer = HTTPBearer(auto_error=False)


def revocation_key(session_id: str) -> str:
    return f"revoked:sid:{session_id}"


def ws_ticket_key(ticket: str) -> str:
    return f"wsticket:{ticket}"


def get_state(request: Request) -> AuthState:
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
    if claims is None or await state.redis.exists(revocation_key(claims.session_id)):
        raise unauthorized
    return claims


Claims = Annotated[AccessClaims, Depends(current_claims)]


class RegisterBody(BaseModel):
    email: EmailStr
    password: str = Field(min_length=10, max_length=1024)
    display_name: str = Field(default="", max_length=100)


class LoginBody(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)


class RefreshBody(BaseModel):
    refresh_token: str = Field(max_length=256)


def normalize_email(email: str) -> str:
    return email.strip().lower()


@router.post("/auth/register", status_code=201)
async def register(body: RegisterBody, state: State) -> dict[str, Any]:
    email = normalize_email(body.email)
    if body.password.strip().lower() == email:
        raise ProblemError(422, "weak_password", "the password must not be the email")
    password_hash = await state.passwords.hash(body.password)
    try:
        user = await state.store.create_user(email, password_hash, body.display_name.strip())
    except EmailTaken:
        raise ProblemError(409, "email_taken", "an account with this email exists") from None
    return {"user": user.public()}


async def _token_pair(state: AuthState, user_id: str, session_id: str,
                      refresh_token: str) -> dict[str, Any]:
    return {
        "access_token": state.tokens.issue(user_id, session_id),
        "token_type": "Bearer",
        "expires_in": state.settings.access_token_ttl_s,
        "refresh_token": refresh_token,
    }


@router.post("/auth/login")
async def login(body: LoginBody, request: Request, state: State) -> dict[str, Any]:
    found = await state.store.user_by_email(normalize_email(body.email))
    user, password_hash = found if found else (None, None)
    if not await state.passwords.verify(password_hash, body.password) or user is None:
        raise ProblemError(401, "invalid_credentials", "email or password is wrong")
    if password_hash and state.passwords.needs_rehash(password_hash):
        await state.store.update_password_hash(user.id, await state.passwords.hash(body.password))
    refresh_token = new_refresh_token()
    session_id = await state.store.create_session(
        user.id, request.headers.get("user-agent", ""),
        timedelta(seconds=state.settings.refresh_token_ttl_s), refresh_token)
    return {**await _token_pair(state, user.id, session_id, refresh_token), "user": user.public()}


@router.post("/auth/refresh")
async def refresh(body: RefreshBody, state: State) -> dict[str, Any]:
    new_token = new_refresh_token()
    outcome = await state.store.rotate_refresh_token(body.refresh_token, new_token)
    if outcome == "reused":
        raise ProblemError(401, "refresh_token_reused",
                           "this refresh token was already used; the session is revoked")
    if isinstance(outcome, str):
        raise ProblemError(401, "invalid_refresh_token", "the refresh token is not valid")
    session_id, user_id = outcome
    return await _token_pair(state, user_id, session_id, new_token)


@router.post("/auth/logout", status_code=204)
async def logout(claims: Claims, state: State) -> Response:
    await state.store.revoke_session(claims.session_id)
    await state.redis.set(revocation_key(claims.session_id), "1",
                          ex=state.settings.access_token_ttl_s)
    return Response(status_code=204)


@router.get("/auth/me")
async def me(claims: Claims, state: State) -> dict[str, Any]:
    user = await state.store.user_by_id(claims.user_id)
    if user is None:
        raise ProblemError(401, "unauthorized", "the account no longer exists")
    return {"user": user.public()}


@router.post("/auth/ws-ticket")
async def ws_ticket(claims: Claims, state: State) -> dict[str, Any]:
    ticket = secrets.token_urlsafe(32)
    ttl = state.settings.ws_ticket_ttl_s
    await state.redis.set(ws_ticket_key(ticket),
                          json.dumps({"user_id": claims.user_id, "sid": claims.session_id}), ex=ttl)
    return {"ticket": ticket, "expires_in": ttl}


@router.get("/.well-known/jwks.json")
async def jwks(state: State, response: Response) -> dict[str, Any]:
    response.headers["Cache-Control"] = "public, max-age=300"
    return state.keys.jwks()
