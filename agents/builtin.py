"""The built-in agents, by name."""

from __future__ import annotations

from agents.planner import BuiltinPlanner, TickerPlanner
from agents.runtime import Agent
from agents.tools import CALCULATOR, ToolRegistry

__all__ = ["builtin_agents"]


def builtin_agents() -> dict[str, Agent]:
    planner = BuiltinPlanner()
    return {
        "supervisor": Agent("supervisor", "The default agent: answers with its tools.",
                            planner, ToolRegistry([CALCULATOR])),
        "ticker": Agent("ticker", "Diagnostics: 'ticks N every M ms' streams N deltas.",
                        TickerPlanner(), ToolRegistry([])),
    }
