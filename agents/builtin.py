"""The built-in agents, by name, with the planner the settings choose."""

from __future__ import annotations

from agents.builtin_tools import CLOCK, ESTIMATE_SAVINGS, QUERY_USAGE, THREAD_SEARCH
from agents.config import WorkerSettings
from agents.openai import make_openai_planner
from agents.pipeline import PipelinePlanner
from agents.planner import Planner, TickerPlanner
from agents.runtime import Agent
from agents.tools import CALCULATOR, Tool, ToolRegistry

__all__ = ["SYSTEM_PROMPT", "builtin_agents"]

SYSTEM_PROMPT = (
    "You are the supervisor of an AI-usage assistant. For questions about the user's AI "
    "spend, call query_usage (per model), then estimate_savings with its items when the "
    "user asks how to save, then answer with each model's requests and cost in dollars to "
    "the cent (saying apart agents_cost_usd: what this platform's own agents spent) and "
    "each saving. Use calculator for arithmetic, clock for the time, "
    "thread_search for the user's earlier messages. Be brief.")


def builtin_agents(settings: WorkerSettings) -> dict[str, Agent]:
    tools = [QUERY_USAGE, ESTIMATE_SAVINGS, CALCULATOR, CLOCK, THREAD_SEARCH]
    unknown = set(settings.approval_tools) - {tool.name for tool in tools}
    if unknown:
        raise ValueError(f"WORKER_APPROVAL_TOOLS names no tool: {', '.join(sorted(unknown))} "
                         f"(the tools: {', '.join(tool.name for tool in tools)})")
    approved = settings.approval_tools

    def registry(*chosen: Tool) -> ToolRegistry:
        return ToolRegistry(chosen).requiring_approval(approved)

    everything = registry(*tools)
    supervisor: Planner = PipelinePlanner("supervisor")
    if settings.llm_provider == "openai":
        supervisor = make_openai_planner(settings, everything, system_prompt=SYSTEM_PROMPT)
    return {
        "supervisor": Agent("supervisor", "The default agent: triage → data → optimization → "
                            "report for spend questions; calculator, clock and message "
                            "search otherwise.", supervisor, everything),
        "triage": Agent("triage", "Classifies a request and says what it needs.",
                        PipelinePlanner("triage"), ToolRegistry([])),
        "data": Agent("data", "Your usage per model over the days you name.",
                      PipelinePlanner("data"), registry(QUERY_USAGE)),
        "optimization": Agent("optimization", "Your usage and what a smaller model would "
                              "save.", PipelinePlanner("optimization"),
                              registry(QUERY_USAGE, ESTIMATE_SAVINGS)),
        "ticker": Agent("ticker", "Diagnostics: 'ticks N every M ms' streams N deltas.",
                        TickerPlanner(), ToolRegistry([])),
    }
