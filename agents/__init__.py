"""The agent service: the run-queue worker, the runtime, tools and the built-in agents."""

from agents.config import WorkerSettings
from agents.context import RunContext
from agents.errors import AgentError, ToolError
from agents.runtime import Runtime
from agents.tools import Tool, ToolRegistry

__all__ = ["AgentError", "RunContext", "Runtime", "Tool", "ToolError", "ToolRegistry",
           "WorkerSettings"]
