"""What the services' schema fuzz tests share: the checks every answer must pass
and the headers of a real, signed-in user."""

from __future__ import annotations

import asyncio

from schemathesis import checks

from e2e.client import ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email

__all__ = ["CHECKS", "signed_in_headers"]

#: no 5xx, and status, content type, body and headers as the schema says
CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance,
          checks.response_headers_conformance]


async def _bearer(target: Target) -> str:
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.signup(unique_email("fuzz"), PASSWORD)
        return f"Bearer {client.access_token}"


def signed_in_headers(target: Target, address: str) -> dict[str, str]:
    """A fresh user's bearer token, from a client address of the fuzz test's own (the
    throttles it trips reach no other test)."""
    return {"Authorization": asyncio.run(_bearer(target)), "X-Forwarded-For": address}
