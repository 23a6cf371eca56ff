"""docker-compose.yml and the Dockerfile, checked statically (no Docker engine here):
the file parses, every service is health-checked and waited for, ports follow the
contract, and the app services run the very entrypoints the local stack runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from agents.config import WorkerSettings
from auth.config import AuthSettings
from backend.config import BackendSettings
from e2e.stack import LocalStack, PythonService, StackConfig

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
APP = {"auth": "auth", "backend": "backend", "worker": "agents.worker"}
CONTRACT_PORTS = {"backend": 8000, "auth": 8001, "postgres": 5432, "redis": 6379,
                  "clickhouse": 8123}
SETTINGS: dict[str, tuple[str, type[BaseSettings]]] = {
    "auth": ("AUTH_", AuthSettings), "backend": ("BACKEND_", BackendSettings),
    "worker": ("WORKER_", WorkerSettings)}


def test_the_stack_has_every_service() -> None:
    assert set(SERVICES) == {"postgres", "redis", "clickhouse", "auth", "backend", "worker"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_healthcheck(name: str) -> None:
    check = SERVICES[name]["healthcheck"]
    assert check["test"] and check["retries"] >= 10


@pytest.mark.parametrize("name", sorted(APP))
def test_app_services_wait_for_healthy_dependencies(name: str) -> None:
    depends = SERVICES[name]["depends_on"]
    assert depends and all(d["condition"] == "service_healthy" for d in depends.values())


@pytest.mark.parametrize(("name", "port"), sorted(CONTRACT_PORTS.items()))
def test_ports_follow_the_contract(name: str, port: int) -> None:
    published = [p.rsplit(":", 1) for p in SERVICES[name]["ports"]]
    assert [int(container) for _, container in published] == [port]
    assert all(re.fullmatch(rf"\$\{{\w+:-{port}\}}", host) for host, _ in published)


def test_app_services_run_the_local_stack_entrypoints(tmp_path: Path) -> None:
    stack = LocalStack(StackConfig.for_tests(tmp_path))
    local = {s.name: s.module for s in stack.services.values() if isinstance(s, PythonService)}
    assert local == {"auth": "auth", "backend": "backend", "worker": "agents.worker"}
    for name, module in APP.items():
        assert SERVICES[name]["command"] == ["python", "-m", module]


@pytest.mark.parametrize("name", sorted(APP))
def test_app_settings_are_real_settings(name: str) -> None:
    prefix, settings = SETTINGS[name]
    for variable in SERVICES[name]["environment"]:
        assert variable.startswith(prefix), variable
        assert variable.removeprefix(prefix).lower() in settings.model_fields, variable


def test_env_example_defines_every_required_variable() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert required and required <= example


def test_dockerfile_builds_the_package_on_python_311() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("# ") and "FROM python:3.11" in dockerfile
    for package in ("auth", "backend", "agents", "bridge", "servicekit"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert "USER app" in dockerfile


def test_the_image_gets_every_data_file_of_the_packages() -> None:
    """The Dockerfile installs the project (not editable): a file of a package that
    package-data does not name would be missing from the image."""
    import tomllib
    from fnmatch import fnmatch

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["*"]
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    missing = [str(path.relative_to(ROOT)) for package in packages
               for path in ROOT.glob(package.rstrip("*") + "/**/*") if path.is_file()
               and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
               and not any(fnmatch(path.name, pattern) for pattern in patterns)]
    assert missing == []
