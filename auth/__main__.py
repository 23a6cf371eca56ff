"""``python -m auth``: run the auth service."""

import sys

from auth.app import MIGRATIONS, create_app
from auth.config import AuthSettings
from servicekit import configure_logging
from servicekit.migrations import migrate_command
from servicekit.server import Listener, serve
from servicekit.settings import load_settings


def main() -> None:
    migrating = sys.argv[1:] == ["migrate"]
    settings = load_settings(AuthSettings, only={"database_url"} if migrating else None)
    configure_logging("auth", settings.log_level)
    if migrating:
        raise SystemExit(migrate_command(settings.database_url, MIGRATIONS, "auth",
                                         timeout=settings.startup_timeout_s))
    apps = create_app(settings)
    public = Listener(apps.public, settings.host, settings.port, {
        "proxy_headers": True, "forwarded_allow_ips": settings.forwarded_allow_ips})
    internal = Listener(apps.internal, settings.internal_host, settings.internal_port,
                        {"ws": "none"})
    serve(public, internal, log_level=settings.log_level)


if __name__ == "__main__":
    main()
