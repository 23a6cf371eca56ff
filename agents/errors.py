"""Exceptions of the agents package.

    AgentError          base
    ├── ToolError       a tool failed; the run is told (tool_completed ok=false) and goes on
    │   └── ToolArgumentsError   the arguments did not validate against the tool's model
    ├── PlannerError    the planner (model) produced something unusable; the run fails
    ├── ProviderError   a model provider failed (HTTP error, unreachable, malformed stream)
    └── StepLimitError  the run used its ``max_steps`` without an answer; the run fails
                        with the code ``step_limit``
"""

__all__ = ["AgentError", "PlannerError", "ProviderError", "StepLimitError", "ToolArgumentsError",
           "ToolError"]


class AgentError(Exception):
    """Base class of every error raised by :mod:`agents`."""


class ToolError(AgentError):
    """A tool could not produce a result. ``code`` is stable, ``message`` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ToolArgumentsError(ToolError):
    def __init__(self, message: str) -> None:
        super().__init__("invalid_arguments", message)


class PlannerError(AgentError):
    """The planner could not decide a next step."""


class ProviderError(AgentError):
    """A model provider could not be asked or did not answer usably; the run fails.
    ``status`` is the HTTP status when the server answered with one. The message
    never holds the API key."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StepLimitError(AgentError):
    """The planner took ``steps`` steps (tool calls, thoughts) without a final answer:
    a model that keeps calling tools ends here, not at the run's deadline."""

    code = "step_limit"

    def __init__(self, steps: int) -> None:
        super().__init__(f"no answer within {steps} steps (the run's step limit)")
        self.steps = steps
