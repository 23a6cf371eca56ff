"""``python -m auth``: run the auth service."""

import sys

from auth.app import MIGRATIONS, create_app
from auth.config import AuthSettings
from servicekit import configure_logging
from servicekit.migrations import migrate_command
from servicekit.server import serve
from servicekit.settings import load_settings


def main() -> None:
    migrating = sys.argv[1:] == ["migrate"]
    settings = load_settings(AuthSettings, only={"database_url"} if migrating else None)
    configure_logging("auth", settings.log_level)
    if migrating:
        raise SystemExit(migrate_command(settings.database_url, MIGRATIONS, "auth",
                                         timeout=settings.startup_timeout_s))
    serve(create_app(settings), host=settings.host, port=settings.port,
          log_level=settings.log_level, proxy_headers=True,
          forwarded_allow_ips=settings.forwarded_allow_ips)


if __name__ == "__main__":
    main()
