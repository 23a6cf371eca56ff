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

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.internal.cache import LRUCache
from hypothesis.internal.conjecture import providers
from schemathesis.core.transport import Response
from schemathesis.generation.modes import GenerationMode

from backend.api import RUN_OPERATIONS, THREAD_OPERATIONS
from e2e.scenarios import Target
from tests.fuzzing import CHECKS, signed_in_headers

FUZZ_ADDRESS = "203.0.113.201"
_NO_CONSTANTS = providers.Constants()
def test_backend_api_conforms_to_its_schema(target: Target) -> None:
    schema = schemathesis.openapi.from_url(f"{target.backend_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 16  # every /api call
    # one user: its threads and runs meet their limits too
    headers = signed_in_headers(target, FUZZ_ADDRESS)
    for operation in operations:
        _fuzz(operation, headers)


def _fuzz(operation: schemathesis.APIOperation, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def conforms(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    conforms()


def test_created_threads_and_runs_link_to_their_operations(target: Target) -> None:
    document = httpx.get(f"{target.backend_url}/openapi.json").json()
    operations = {op["operationId"]: (path, op) for path, item in document["paths"].items()
                  for op in item.values()}
    assert len(operations) == 16  # ids are unique

    def links(operation_id: str, status: str) -> dict[str, Any]:
        found: dict[str, Any] = operations[operation_id][1]["responses"][status]["links"]
        for link in found.values():  # each names an operation, and that operation's parameters
            path, operation = operations[link["operationId"]]
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert set(link["parameters"]) <= names, (link, path)
            assert all(v.startswith("$response.body#/") for v in link["parameters"].values())
        return found

    def targets(found: dict[str, Any]) -> dict[str, dict[str, str]]:
        return {link["operationId"]: link["parameters"] for link in found.values()}

    by_thread = {op: {"thread_id": "$response.body#/id"} for op in THREAD_OPERATIONS}
    assert targets(links("create_thread", "201")) == by_thread
    assert targets(links("get_thread", "200")) == by_thread
    by_run = {op: {"run_id": "$response.body#/id"} for op in RUN_OPERATIONS}
    for operation_id, status in (("create_run", "202"), ("get_run", "200")):
        run_links = targets(links(operation_id, status))
        assert {k: v for k, v in run_links.items() if k in RUN_OPERATIONS} == by_run
        assert run_links["get_thread"] == {"thread_id": "$response.body#/thread_id"}
    assert set(RUN_OPERATIONS) | set(THREAD_OPERATIONS) <= set(operations)


def test_following_the_links_stays_within_the_schema(target: Target,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Stateful: sequences of calls where a created thread's or run's id feeds the next."""
    # Hypothesis mixes the string and number constants of every module of the project
    # into what it draws: derandomized, the calls would then change with any constant
    # added anywhere in the code. Without them they follow from the schema alone.
    monkeypatch.setattr(providers, "_get_local_constants", lambda: _NO_CONSTANTS)
    monkeypatch.setattr(providers, "CONSTANTS_CACHE", LRUCache(1024))  # none from before
    schema = schemathesis.openapi.from_url(f"{target.backend_url}/openapi.json")
    # valid requests only (the run above sends invalid ones): each step can feed the next
    schema.config.generation.update(modes=[GenerationMode.POSITIVE])
    headers = signed_in_headers(target, FUZZ_ADDRESS)
    reached: set[tuple[str, int]] = set()

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": headers}

        def validate_response(self, response: Response, case: schemathesis.Case,
                              additional_checks: Any = None, **kwargs: Any) -> None:
            reached.add((case.operation.definition.raw["operationId"], response.status_code))
            case.validate_response(response, checks=CHECKS, headers=headers,
                                   transport_kwargs=kwargs)

    Machine.run(settings=settings(max_examples=50, stateful_step_count=10, deadline=None,
                                  derandomize=True,
                                  database=None, suppress_health_check=list(HealthCheck)))
    # the links took calls on a thread and on a run past 404 (a run's own answers;
    # cancel_run's 409 run_finished is one too)
    past = {op for op, status in reached if status not in (401, 404, 422) and status < 500}
    detail = str(sorted(reached))
    assert "create_thread" in past and "create_run" in past, detail
    assert past & {"get_thread", "rename_thread", "list_messages", "delete_thread"}, detail
    assert past & set(RUN_OPERATIONS), detail
