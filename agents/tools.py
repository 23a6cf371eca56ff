"""Tools: each declares its arguments as a pydantic model, validated before the call.

A tool is an async function of (context, arguments) returning a JSON-able result.
Its JSON schema (from the arguments model) is what ``GET /api/agents`` serves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from agents.calculator import CalculatorError, evaluate
from agents.context import RunContext
from agents.errors import ToolArgumentsError, ToolError

__all__ = ["CALCULATOR", "Tool", "ToolRegistry"]

ToolFunction = Callable[[RunContext, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    arguments: type[BaseModel]
    function: ToolFunction
    timeout_s: float | None = None  # None: the worker's default
    # a call waits for its user's approve_tool / reject_tool (agents.runtime pauses
    # the run; WORKER_APPROVAL_TOOLS marks the built-in tools)
    needs_approval: bool = False

    def schema(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "parameters": self.arguments.model_json_schema()}

    def validate(self, raw: dict[str, Any]) -> BaseModel:
        try:
            return self.arguments.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
                                 for e in exc.errors())
            raise ToolArgumentsError(problems) from None


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool]) -> None:
        self._tools = {tool.name: tool for tool in tools}

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise ToolError("unknown_tool", f"no tool named {name!r}") from None

    def needs_approval(self, name: str) -> bool:
        tool = self._tools.get(name)
        return tool is not None and tool.needs_approval

    def requiring_approval(self, names: Iterable[str]) -> ToolRegistry:
        """The same tools, those named needing their user's approval."""
        marked = set(names)
        return ToolRegistry(replace(tool, needs_approval=True) if tool.name in marked else tool
                            for tool in self)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())


class CalculatorArgs(BaseModel):
    expression: str = Field(min_length=1, max_length=200,
                            description="Arithmetic with + - * / // % ** and parentheses")


async def _calculate(_: RunContext, args: CalculatorArgs) -> dict[str, Any]:
    try:
        return {"expression": args.expression, "value": evaluate(args.expression)}
    except CalculatorError as exc:
        raise ToolError("calculation_error", str(exc)) from None


CALCULATOR = Tool("calculator", "Evaluate an arithmetic expression exactly.", CalculatorArgs,
                  _calculate)
