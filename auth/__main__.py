"""``python -m auth``: run the auth service."""

from auth.app import create_app
from auth.config import AuthSettings
from servicekit import configure_logging
from servicekit.server import Listener, serve


def main() -> None:
    settings = AuthSettings()
    configure_logging("auth", settings.log_level)
    public = Listener(create_app(settings), settings.host, settings.port, {
        "proxy_headers": True, "forwarded_allow_ips": settings.forwarded_allow_ips})
    serve(public, log_level=settings.log_level)


if __name__ == "__main__":
    main()
