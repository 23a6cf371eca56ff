"""Property-based run of the backend's OpenAPI schema (schemathesis), signed in.

Every operation gets a bounded number of generated requests carrying a real
user's access token (so they reach past authentication into validation, the
stores and ClickHouse); no answer may be a 5xx, and every answer must match the
schema (status, content type, headers, body). Then a stateful run follows the
schema's links (a created thread's id into the thread operations, a started
run's id into the run operations), so requests reach past 404s. Requests come
from a dedicated client address.
"""

from __future__ import annotations

import asyncio

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from e2e.client import ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email

FUZZ_ADDRESS = "203.0.113.201"
CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance,
          checks.response_headers_conformance]


async def _bearer(target: Target) -> str:
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.signup(unique_email("fuzz"), PASSWORD)
        return f"Bearer {client.access_token}"


def _headers(target: Target) -> dict[str, str]:
    return {"Authorization": asyncio.run(_bearer(target)), "X-Forwarded-For": FUZZ_ADDRESS}


def test_backend_api_conforms_to_its_schema(target: Target) -> None:
    schema = schemathesis.openapi.from_url(f"{target.backend_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 15  # every /api call
    headers = _headers(target)  # one user: its threads and runs meet their limits too
    for operation in operations:
        _fuzz(operation, headers)


def _fuzz(operation: schemathesis.APIOperation, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def conforms(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    conforms()
