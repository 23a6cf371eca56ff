"""``python -m auth``: run the auth service."""

from auth.app import create_app
from auth.config import AuthSettings
from servicekit import configure_logging
from servicekit.server import Listener, serve


def main() -> None:
    settings = AuthSettings()
    configure_logging("auth", settings.log_level)
    apps = create_app(settings)
    public = Listener(apps.public, settings.host, settings.port, {
        "proxy_headers": True, "forwarded_allow_ips": settings.forwarded_allow_ips})
    internal = Listener(apps.internal, settings.internal_host, settings.internal_port,
                        {"ws": "none"})
    serve(public, internal, log_level=settings.log_level)


if __name__ == "__main__":
    main()
