"""The compose files and the Dockerfile, read as data: what must hold of them before
any engine runs them (tests/compose/ runs them on a real one).

Closed by default: only auth's and backend's public listeners are published, on
127.0.0.1 unless told otherwise; the data stores sit on an internal network; every
secret has a development-only default that production refuses; the offline
override swaps images and nothing else.
"""

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
from e2e.compose import PORT_VARIABLES, SECRET_VARIABLES
from e2e.stack import LocalStack, PythonService, StackConfig

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return loaded


COMPOSE = _load("docker-compose.yml")
DEV = _load("compose.dev.yml")
OFFLINE = _load("compose.offline.yml")
SERVICES: dict[str, Any] = COMPOSE["services"]
DATA_STORES = {"postgres": 5432, "redis": 6379, "clickhouse": 8123}
PUBLIC = {"backend": 8000, "auth": 8001}
APP = {"auth": "auth", "backend": "backend", "worker": "agents.worker"}
SETTINGS: dict[str, tuple[str, type[BaseSettings]]] = {
    "AUTH_": ("auth", AuthSettings), "BACKEND_": ("backend", BackendSettings),
    "WORKER_": ("worker", WorkerSettings)}


def test_the_stack_has_every_service() -> None:
    assert set(SERVICES) == {*DATA_STORES, *APP, "migrate"}


@pytest.mark.parametrize("name", sorted(set(SERVICES) - {"migrate"}))
def test_every_long_running_service_has_a_healthcheck(name: str) -> None:
    check = SERVICES[name]["healthcheck"]
    assert check["test"] and check["retries"] >= 10


@pytest.mark.parametrize("name", sorted(APP))
def test_app_services_wait_for_their_dependencies(name: str) -> None:
    depends = SERVICES[name]["depends_on"]
    assert depends and all(d["condition"] in ("service_healthy", "service_completed_successfully")
                           for d in depends.values())
    if name != "worker":  # the services that use Postgres start after its migrations
        assert depends["migrate"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize(("name", "port"), sorted(PUBLIC.items()))
def test_public_listeners_are_published_on_loopback_by_default(name: str, port: int) -> None:
    assert SERVICES[name]["ports"] == [
        f"${{PUBLISH_ADDRESS:-127.0.0.1}}:${{{name.upper()}_PORT:-{port}}}:{port}"]


def test_nothing_else_is_published() -> None:
    assert {name for name, s in SERVICES.items() if "ports" in s} == set(PUBLIC)


def test_data_stores_live_on_an_internal_network_only() -> None:
    assert COMPOSE["networks"]["backplane"] == {"internal": True}
    for name in DATA_STORES:
        assert SERVICES[name]["networks"] == ["backplane"], name


@pytest.mark.parametrize(("name", "port"), sorted(DATA_STORES.items()))
def test_the_dev_override_publishes_data_stores_on_loopback_only(name: str, port: int) -> None:
    variable = f"{name.upper()}_PORT"
    assert DEV["services"][name]["ports"] == [f"127.0.0.1:${{{variable}:-{port}}}:{port}"]
    assert variable in PORT_VARIABLES


def test_the_offline_override_swaps_images_and_nothing_else() -> None:
    for name, service in OFFLINE["services"].items():
        assert set(service) <= {"image", "build"}, name
        if "image" in service:
            assert service["image"].startswith("agentchat-offline/")
            assert "image" in SERVICES[name]
        if "build" in service:
            assert set(service["build"]["args"]) == {"PYTHON_IMAGE", "PIP_OPTIONS"}
    assert set(OFFLINE) == {"x-offline-build", "services"}


def test_the_app_services_run_the_local_stack_entrypoints(tmp_path: Path) -> None:
    stack = LocalStack(StackConfig.for_tests(tmp_path))
    local = {s.name: s.module for s in stack.services.values() if isinstance(s, PythonService)}
    assert local == {"auth": "auth", "backend": "backend", "worker": "agents.worker"}
    for name, module in APP.items():
        assert SERVICES[name]["command"] == ["python", "-m", module]


@pytest.mark.parametrize("name", sorted([*APP, "migrate"]))
def test_app_settings_are_real_settings(name: str) -> None:
    for variable in SERVICES[name]["environment"]:
        prefix = variable.split("_", 1)[0] + "_"
        assert prefix in SETTINGS, variable
        service, settings = SETTINGS[prefix]
        assert name in (service, "migrate"), variable
        assert variable.removeprefix(prefix).lower() in settings.model_fields, variable


@pytest.mark.parametrize("name", sorted([*APP, "migrate"]))
def test_app_containers_are_locked_down(name: str) -> None:
    service = SERVICES[name]
    assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]


def test_every_secret_has_a_development_only_default_and_is_documented() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    defaults = dict(re.findall(r"\$\{(\w+):-([^}]*)\}", text))
    example = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    for name in SECRET_VARIABLES:
        assert defaults[name].startswith("dev-insecure-"), name
        assert name in example, name
    # no secret is written out anywhere but in its ${NAME:-dev-insecure-…} default
    assert not re.findall(r"(?<![-{])dev-insecure-", text.replace("${", "{"))


def test_the_image_is_built_in_two_stages_and_runs_unprivileged() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("# ")
    assert dockerfile.count("FROM ${PYTHON_IMAGE}") == 2
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile
    for package in ("auth", "backend", "agents", "bridge", "servicekit"):
        assert f"COPY {package} ./{package}" in dockerfile
    final = dockerfile.rsplit("FROM ", 1)[1]
    assert "COPY --from=build /opt/venv /opt/venv" in final
    assert re.search(r"^USER 10001$", final, re.MULTILINE)
    assert "pip uninstall -y pip" in dockerfile


def test_the_build_context_is_only_what_the_image_needs() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines[0] == "*"
    assert {"!tests", "!.git", "!.env", "!.venv"}.isdisjoint(lines)


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
