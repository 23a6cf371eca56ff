"""The self-validating stack: start the real services, drive them, measure, report."""

from e2e.client import ChatClient, EventSocket
from e2e.scenarios import SCENARIOS, ScenarioResult, Target
from e2e.stack import LocalStack, StackConfig, StackError, StackPorts

__all__ = ["SCENARIOS", "ChatClient", "EventSocket", "LocalStack", "ScenarioResult",
           "StackConfig", "StackError", "StackPorts", "Target"]
