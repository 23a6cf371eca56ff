"""Property-based run of the auth service's OpenAPI schema (schemathesis).

Every operation gets a bounded number of generated requests, with a fresh valid
token; no answer may be a 5xx, and every answer must match the schema (status,
content type, headers, body). Requests come from a dedicated client address so
the login throttle they trip does not reach other tests.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from e2e.scenarios import Target
from tests.fuzzing import CHECKS, signed_in_headers

FUZZ_ADDRESS = "203.0.113.200"
def test_auth_api_conforms_to_its_schema(target: Target) -> None:
    schema = schemathesis.openapi.from_url(f"{target.auth_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 10  # every call of the contract
    for operation in operations:
        _fuzz(operation, signed_in_headers(target, FUZZ_ADDRESS))


def _fuzz(operation: schemathesis.APIOperation, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def conforms(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    conforms()
