"""``python -m backend``: run the API service."""

from backend.app import create_app, socket_first
from backend.config import BackendSettings
from servicekit import configure_logging
from servicekit.server import Listener, serve


def main() -> None:
    settings = BackendSettings()
    configure_logging(settings.replica_id, settings.log_level)
    app = create_app(settings)
    public = Listener(socket_first(app), settings.host, settings.port, {
        "ws_max_size": settings.ws_max_frame_bytes, "ws_ping_interval": settings.ws_heartbeat_s,
        "ws_ping_timeout": settings.ws_heartbeat_s,
        "ws_per_message_deflate": settings.ws_compression})
    serve(public, log_level=settings.log_level, before_shutdown=app.state.gateway.close_all)


if __name__ == "__main__":
    main()
