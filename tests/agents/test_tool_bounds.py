"""Every built-in tool's arguments are bounded by its schema, and checked before the call."""

from __future__ import annotations

from typing import Any

import pytest

from agents.builtin import builtin_agents
from agents.config import WorkerSettings
from agents.errors import ToolArgumentsError
from agents.tools import Tool

TOOLS = {tool.name: tool for agent in builtin_agents(WorkerSettings()).values()
         for tool in agent.tools}


def _unbounded(schema: dict[str, Any], defs: dict[str, Any], at: str) -> list[str]:
    """The places of ``schema`` where a string, list or number has no upper bound."""
    if "$ref" in schema:
        return _unbounded(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, at)
    kind = schema.get("type")
    problems = []
    if kind == "string" and "maxLength" not in schema and "enum" not in schema:
        problems.append(f"{at}: no maxLength")
    if kind in ("integer", "number") and "maximum" not in schema:
        problems.append(f"{at}: no maximum")
    if kind == "array":
        if "maxItems" not in schema:
            problems.append(f"{at}: no maxItems")
        problems += _unbounded(schema.get("items", {}), defs, f"{at}[]")
    for name, prop in schema.get("properties", {}).items():
        problems += _unbounded(prop, defs, f"{at}.{name}")
    for option in schema.get("anyOf", []):
        problems += _unbounded(option, defs, at)
    return problems


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_every_argument_has_an_upper_bound(name: str) -> None:
    schema = TOOLS[name].schema()["parameters"]
    assert _unbounded(schema, schema.get("$defs", {}), name) == []


@pytest.mark.parametrize(("name", "arguments"), [
    ("calculator", {"expression": "1+" * 200}),
    ("clock", {"timezone": "x" * 65}),
    ("thread_search", {"text": "a", "limit": 21}),
    ("query_usage", {"days": 366}),
    ("estimate_savings", {"items": [{"key": "k" * 201, "requests": 1, "cost_usd": 0,
                                     "short_requests": 0, "short_prompt_tokens": 0,
                                     "short_completion_tokens": 0, "short_cost_usd": 0}]}),
])
def test_arguments_beyond_a_bound_are_refused(name: str, arguments: dict[str, Any]) -> None:
    tool: Tool = TOOLS[name]
    with pytest.raises(ToolArgumentsError):
        tool.validate(arguments)
