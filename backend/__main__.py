"""``python -m backend``: run the API service."""

import sys

from backend.app import MIGRATIONS, create_app, socket_first
from backend.config import BackendSettings
from servicekit import configure_logging
from servicekit.migrations import migrate_command
from servicekit.server import Listener, serve
from servicekit.settings import load_settings


def main() -> None:
    migrating = sys.argv[1:] == ["migrate"]
    settings = load_settings(BackendSettings, only={"database_url"} if migrating else None)
    configure_logging(settings.replica_id, settings.log_level)
    if migrating:
        raise SystemExit(migrate_command(settings.database_url, MIGRATIONS, "app",
                                         timeout=settings.startup_timeout_s))
    apps = create_app(settings)
    public = Listener(socket_first(apps.public), settings.host, settings.port, {
        "ws_max_size": settings.ws_max_frame_bytes, "ws_ping_interval": settings.ws_heartbeat_s,
        "ws_ping_timeout": settings.ws_heartbeat_s,
        "ws_per_message_deflate": settings.ws_compression})
    internal = Listener(apps.internal, settings.internal_host, settings.internal_port,
                        {"ws": "none"})
    serve(public, internal, log_level=settings.log_level,
          before_shutdown=apps.public.state.gateway.close_all)


if __name__ == "__main__":
    main()
