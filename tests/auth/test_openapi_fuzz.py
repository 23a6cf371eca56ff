"""Property-based run of the auth service's OpenAPI schema (schemathesis).

Every operation gets a bounded number of generated requests, with a fresh valid
token; no answer may be a 5xx, and every answer must match the schema (status,
content type, headers, body). Requests come from a dedicated client address so
the login throttle they trip does not reach other tests.
"""

from __future__ import annotations

import asyncio

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from e2e.client import ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email

FUZZ_ADDRESS = "203.0.113.200"
CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance,
          checks.response_headers_conformance]


async def _bearer(target: Target) -> str:
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.signup(unique_email("fuzz"), PASSWORD)
        return f"Bearer {client.access_token}"


def test_auth_api_conforms_to_its_schema(target: Target) -> None:
    schema = schemathesis.openapi.from_url(f"{target.auth_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 10  # every call of the contract
    for operation in operations:
        _fuzz(operation, {"Authorization": asyncio.run(_bearer(target)),
                          "X-Forwarded-For": FUZZ_ADDRESS})


def _fuzz(operation: schemathesis.APIOperation, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def conforms(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    conforms()
