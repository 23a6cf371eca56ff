"""The API service: REST, the WebSocket gateway, token verification, analytics."""

from backend.app import create_app
from backend.config import BackendSettings

__all__ = ["BackendSettings", "create_app"]
