"""The Kubernetes manifests (deploy/k8s), rendered as kustomize renders them and read
as data: what must hold of every overlay before any cluster runs it. No cluster here:
the objects are checked against the Kubernetes schemas bundled in kubernetes-validate,
KEDA's against its documented fields, and, where kubectl is installed, the renderer
against ``kubectl kustomize``.
"""

from __future__ import annotations

import base64
import importlib.util
import re
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from agents.config import WorkerSettings
from auth.config import AuthSettings
from backend.config import BackendSettings
from servicekit.settings import problem_lines
from tests.production import TOKEN, clear_service_variables

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"


def _load_render() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_render", K8S / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


render = _load_render()
Obj = dict[str, Any]
OVERLAYS: tuple[str, ...] = render.OVERLAYS
RENDERED: dict[str, list[Obj]] = {name: render.render(name) for name in OVERLAYS}
APP = {"auth", "backend", "worker"}
#: each data store's ports and the components that may open them
DATA_STORES = {"postgres": {5432}, "redis": {6379}, "clickhouse": {8123, 8443}}
CLIENTS = {5432: {"auth", "backend", "migrate"}, 6379: {"auth", "backend", "worker"},
           8123: {"backend"}, 8443: {"backend"}}
SETTINGS: dict[str, type[BaseSettings]] = {
    "AUTH_": AuthSettings, "BACKEND_": BackendSettings, "WORKER_": WorkerSettings}
SECRET_WORDS = {"PASSWORD", "PASS", "TOKEN", "SECRET", "KEY", "CREDENTIALS"}
CREDENTIAL_URL = re.compile(r"://[^/@\s]*:[^/@\s]+@")


def objects(overlay: str, kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in RENDERED[overlay] if o["kind"] == kind}


def workloads(overlay: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in RENDERED[overlay] if o["kind"] in
            ("Deployment", "StatefulSet", "Job")}


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def component(workload: Obj) -> str:
    return pod_labels(workload)["app.kubernetes.io/component"]


def the_container(workload: Obj) -> Obj:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    result: Obj = container
    return result


def every_container(overlay: str) -> Iterator[tuple[str, Obj, Obj]]:
    for name, workload in workloads(overlay).items():
        pod = workload["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield name, pod, container


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if ((operator == "In" and labels.get(key) not in values)
                or (operator == "NotIn" and labels.get(key) in values)
                or (operator == "Exists" and key not in labels)
                or (operator == "DoesNotExist" and key in labels)):
            return False
    return True


def selected(overlay: str, selector: Obj) -> set[str]:
    """The components of this overlay's workloads whose pods the selector matches."""
    return {component(w) for w in workloads(overlay).values() if selects(selector, pod_labels(w))}


def env_of(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env", [])}


def resolved_env(overlay: str, container: Obj, secret: dict[str, str]) -> dict[str, str]:
    """The container's variables as the kubelet sets them, ``secret`` as the Secret."""
    configmaps = objects(overlay, "ConfigMap")
    values = {}
    for name, env in env_of(container).items():
        source = env.get("valueFrom") or {}
        if "value" in env:
            values[name] = env["value"]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            values[name] = configmaps[ref["name"]]["data"][ref["key"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            if ref["key"] in secret:
                values[name] = secret[ref["key"]]
            else:
                assert ref.get("optional"), f"{name}: no key {ref['key']}"
        elif "fieldRef" in source:
            values[name] = "pod-name"
    return values


def dev_secret() -> dict[str, str]:
    secret = objects("development", "Secret")[render.SECRET]
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


# -- rendering and validation ----------------------------------------------------------

@pytest.mark.parametrize("version", render.KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_against_the_kubernetes_schemas(overlay: str, version: str
                                                                ) -> None:
    assert render.schema_problems(RENDERED[overlay], version) == []


def test_the_schema_check_is_strict() -> None:
    broken = [o for o in RENDERED["production"] if o["kind"] == "Deployment"][:1]
    broken[0] = yaml.safe_load(yaml.safe_dump(broken[0]))
    broken[0]["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesytem"] = True
    problems = render.schema_problems(broken, render.KUBERNETES_VERSIONS[-1])
    assert problems and "readOnlyRootFilesytem" in problems[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_objects_are_as_keda_documents_them(overlay: str) -> None:
    """KEDA's CRDs are not in the Kubernetes schemas: checked field by field."""
    assert render.keda_problems(RENDERED[overlay]) == []
    scaled = objects(overlay, "ScaledObject")["worker"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "worker"
    triggers = scaled["triggers"]
    assert {t["type"] for t in triggers} == {"redis-streams"}
    assert all(t["metadata"]["stream"] == "runs:queue" for t in triggers)
    assert all(t["metadata"]["consumerGroup"] == "workers" for t in triggers)
    assert {"lagCount", "pendingEntriesCount"} <= {k for t in triggers for k in t["metadata"]}


def test_the_keda_check_finds_mistakes() -> None:
    objs = yaml.safe_load(yaml.safe_dump(RENDERED["production"]))
    scaled = next(o for o in objs if o["kind"] == "ScaledObject")
    scaled["spec"]["scaleTargetRef"]["name"] = "nobody"
    scaled["spec"]["triggers"][0]["metadata"]["pendingEntriesCount"] = 40
    problems = render.keda_problems(objs)
    assert any("nobody" in p for p in problems)
    assert any("must be a string" in p for p in problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_renderer_prints_what_kubectl_kustomize_prints(overlay: str) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: kustomize's own rendering is not compared")
    theirs = render.kubectl_kustomize(render.overlay_dir(overlay))
    assert render.compare(RENDERED[overlay], theirs) == []


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("commonLabels: {a: b}\n")
    with pytest.raises(render.RenderError, match="commonLabels"):
        render.render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("resources: [../outside.yaml]\n")
    (tmp_path.parent / "outside.yaml").write_text("apiVersion: v1\nkind: Namespace\n")
    with pytest.raises(render.RenderError, match="outside"):
        render.render(tmp_path)


def test_strategic_merge_follows_the_merge_keys() -> None:
    target = {"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]},
                                      {"name": "b"}], "args": ["--one"]}}
    patch = {"spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}]}],
                      "args": ["--two"]}}
    merged = render.strategic_merge(target, patch, builtin=True)
    assert [c["name"] for c in merged["spec"]["containers"]] == ["a", "b"]
    assert merged["spec"]["containers"][0]["env"] == [{"name": "Y", "value": "2"},
                                                      {"name": "X", "value": "1"}]
    assert merged["spec"]["args"] == ["--two"]  # no merge key: replaced
    assert render.strategic_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": None}},
                                  builtin=True) == {"a": {"c": 2}}


# -- containers ------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_unprivileged(overlay: str) -> None:
    for name, pod, container in every_container(overlay):
        security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        assert security.get("runAsNonRoot") is True, name
        assert security.get("runAsUser", 0) > 0, name
        assert security.get("readOnlyRootFilesystem") is True, name
        assert security.get("allowPrivilegeEscalation") is False, name
        assert security.get("capabilities") == {"drop": ["ALL"]}, name
        assert security.get("seccompProfile") == {"type": "RuntimeDefault"}, name
        assert pod.get("automountServiceAccountToken") is False, name
        assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_services_run_as_the_images_user(overlay: str) -> None:
    user = re.search(r"^USER (\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert user is not None
    for name, pod, container in every_container(overlay):
        if container["image"].split(":")[0].endswith("agentchat"):
            assert pod["securityContext"]["runAsUser"] == int(user.group(1)), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_a_memory_limit(overlay: str) -> None:
    for name, _, container in every_container(overlay):
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), name
        assert "memory" in resources["limits"], name


def _port_names(container: Obj) -> set[Any]:
    return {p.get("name") for p in container.get("ports", [])} | {
        p["containerPort"] for p in container.get("ports", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_long_running_containers_have_probes_on_their_own_ports(overlay: str) -> None:
    for name, workload in workloads(overlay).items():
        if workload["kind"] == "Job":
            continue
        container = the_container(workload)
        for probe in ("livenessProbe", "readinessProbe"):
            assert probe in container, f"{name}: no {probe}"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            http = container.get(probe, {}).get("httpGet")
            if http is not None:
                assert http["port"] in _port_names(container), f"{name} {probe}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_http_services_are_probed_on_their_internal_listener(overlay: str) -> None:
    """/healthz for liveness, /readyz for readiness, on the internal port, which
    listens on every interface of the pod (the default, 127.0.0.1, is out of the
    kubelet's reach)."""
    for name, port in (("backend", 8010), ("auth", 8011)):
        container = the_container(workloads(overlay)[name])
        internal = next(p for p in container["ports"] if p["name"] == "internal")
        assert internal["containerPort"] == port
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "internal"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "internal"}
        prefix = name.upper()
        env = env_of(container)
        assert env[f"{prefix}_INTERNAL_HOST"]["value"] == "0.0.0.0"
        assert env[f"{prefix}_INTERNAL_PORT"]["value"] == str(port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_worker_is_probed_by_its_health_files_age(overlay: str) -> None:
    container = the_container(workloads(overlay)["worker"])
    health_file = env_of(container)["WORKER_HEALTH_FILE"]["value"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:2] == ["sh", "-c"]
        assert f"find {health_file} -newermt '-10 seconds'" in command[2]
    assert health_file.startswith("/tmp/")


def _grace(workload: Obj) -> int:
    grace: int = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    return grace


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_each_services_drain(overlay: str) -> None:
    """auth and backend: the preStop sleep, the backend's socket closing (at most
    5 s, servicekit/server.py) and uvicorn's graceful shutdown (10 s); the worker:
    WORKER_SHUTDOWN_GRACE_S, then up to 5 s for the runs it ends."""
    for name in ("auth", "backend"):
        workload = workloads(overlay)[name]
        sleep = the_container(workload)["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep[0] == "sleep"
        assert _grace(workload) >= int(sleep[1]) + 5 + 10 + 5, name
    worker = workloads(overlay)["worker"]
    shutdown = float(env_of(the_container(worker))["WORKER_SHUTDOWN_GRACE_S"]["value"])
    assert shutdown == WorkerSettings.model_fields["shutdown_grace_s"].default
    assert _grace(worker) >= shutdown + 5 + 5


# -- configuration and secrets ---------------------------------------------------------

def _looks_secret(name: str) -> bool:
    return bool(SECRET_WORDS & set(name.split("_"))) or name.endswith(
        ("DATABASE_URL", "REDIS_URL", "CLICKHOUSE_URL"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_credential_comes_from_a_secret(overlay: str) -> None:
    for name, _, container in every_container(overlay):
        for variable, env in env_of(container).items():
            if _looks_secret(variable):
                assert "secretKeyRef" in env.get("valueFrom", {}), f"{name}: {variable}"
            assert not CREDENTIAL_URL.search(str(env.get("value", ""))), f"{name}: {variable}"
    for configmap in objects(overlay, "ConfigMap").values():
        for key, value in configmap["data"].items():
            assert not CREDENTIAL_URL.search(value), key
            assert "dev-insecure" not in value, key


def test_the_backend_and_the_workers_share_the_internal_token() -> None:
    for overlay in OVERLAYS:
        backend = env_of(the_container(workloads(overlay)["backend"]))
        worker = env_of(the_container(workloads(overlay)["worker"]))
        assert (backend["BACKEND_INTERNAL_TOKEN"]["valueFrom"]
                == worker["WORKER_BACKEND_TOKEN"]["valueFrom"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_variable_is_a_setting(overlay: str) -> None:
    """A misspelt AUTH_/BACKEND_/WORKER_ variable would be ignored silently."""
    for name, _, container in every_container(overlay):
        for variable in env_of(container):
            for prefix, settings in SETTINGS.items():
                if variable.startswith(prefix):
                    field = variable[len(prefix):].lower()
                    assert field in settings.model_fields, f"{name}: {variable}"


def test_production_ships_no_secret_value() -> None:
    objs = RENDERED["production"]
    assert not [o for o in objs if o["kind"] == "Secret"]
    text = render.dump(objs)
    assert "dev-insecure" not in text
    assert not CREDENTIAL_URL.search(text)


def test_the_secrets_production_needs_are_documented() -> None:
    """docs/kubernetes.md's `kubectl create secret` names every key production reads."""
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    documented = set(re.findall(r"--from-literal=([a-z0-9-]+)=", docs))
    needed = render.secret_keys(RENDERED["production"])
    assert needed <= documented, sorted(needed - documented)
    assert documented <= needed | set(dev_secret()), sorted(documented - needed)
    assert re.search(rf"create secret generic {render.AUTH_KEYS_SECRET} --from-file=", docs)


def test_development_and_production_read_the_same_keys() -> None:
    dev = render.secret_keys(RENDERED["development"])
    assert render.secret_keys(RENDERED["production"]) <= dev
    assert dev <= set(dev_secret()) | {"openai-api-key"}
    assert all("dev-insecure" in v for k, v in dev_secret().items()
               if k not in ("keda-redis-address", "keda-redis-username"))


def _settings_problems(overlay: str, secret: dict[str, str], environment: str,
                       monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Each service's settings, built from its container's environment in
    ``environment``: the problems they name (none: they start)."""
    problems = {}
    for name in ("auth", "backend", "worker", "migrate"):
        env = resolved_env(overlay, the_container(workloads(overlay)[name]), secret)
        for prefix, settings in SETTINGS.items():
            if not any(variable.startswith(prefix) for variable in env):
                continue
            with monkeypatch.context() as patch:
                clear_service_variables(patch)
                for variable, value in env.items():
                    patch.setenv(variable, value)
                patch.setenv(f"{prefix}ENVIRONMENT", environment)
                try:
                    settings()
                    lines: list[str] = []
                except ValidationError as error:
                    lines = problem_lines(settings, error)
            if name == "migrate":  # `python -m auth migrate` checks its database URL only
                lines = [line for line in lines if "_DATABASE_URL:" in line]
            problems[f"{name} {prefix}"] = lines
    return problems


def test_the_development_values_work_in_development_and_are_refused_in_production(
        monkeypatch: pytest.MonkeyPatch) -> None:
    development = _settings_problems("development", dev_secret(), "development", monkeypatch)
    assert development and all(lines == [] for lines in development.values()), development
    production = _settings_problems("development", dev_secret(), "production", monkeypatch)
    for service, lines in production.items():
        assert lines, f"{service}: the dev-insecure values pass in production"


def test_production_starts_with_strong_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = {key: (re.sub(r"dev-insecure[a-z-]*", TOKEN, value) if "://" in value
                    else TOKEN) for key, value in dev_secret().items()}
    problems = _settings_problems("production", secret, "production", monkeypatch)
    assert problems and all(lines == [] for lines in problems.values()), problems


def test_the_environment_is_the_overlays() -> None:
    for overlay, environment in (("development", "development"), ("production", "production")):
        config = next(c for n, c in objects(overlay, "ConfigMap").items()
                      if n.startswith("agentchat-config-"))
        assert config["data"]["environment"] == environment
        for name, _, container in every_container(overlay):
            for variable, env in env_of(container).items():
                if variable.endswith("_ENVIRONMENT") and variable.startswith(tuple(SETTINGS)):
                    ref = env["valueFrom"]["configMapKeyRef"]
                    assert (ref["name"], ref["key"]) == (config["metadata"]["name"],
                                                         "environment"), name


def test_the_dev_overlays_scripts_are_the_deploy_directorys() -> None:
    files = K8S / "overlays" / "development" / "files"
    assert (files / "redis-start.sh").read_bytes() == (
        ROOT / "deploy" / "redis" / "start.sh").read_bytes()
    for name in ("10-roles.sh", "roles.psql"):
        assert (files / name).read_bytes() == (
            ROOT / "deploy" / "postgres" / "initdb" / name).read_bytes()


# -- migrations ------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_migrations_run_as_composes_migrate_service_runs_them(overlay: str) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["migrate"]
    job = objects(overlay, "Job")["migrate"]
    container = the_container(job)
    assert container["command"] == compose["command"]
    assert container["image"] == the_container(workloads(overlay)["backend"])["image"]
    env = env_of(container)
    for variable in ("AUTH_DATABASE_URL", "BACKEND_DATABASE_URL"):
        assert env[variable]["valueFrom"]["secretKeyRef"]["key"] == "migrate-database-url"
    for name in ("auth", "backend"):
        env = env_of(the_container(workloads(overlay)[name]))
        assert env[f"{name.upper()}_MIGRATE_ON_START"]["value"] == "false"
    if overlay == "development":  # the owner of the schemas, as in compose
        assert dev_secret()["migrate-database-url"].startswith("postgresql://agentchat:")


# -- availability ----------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_disruption_budget(overlay: str) -> None:
    budgets = objects(overlay, "PodDisruptionBudget").values()
    for name, deployment in objects(overlay, "Deployment").items():
        covering = [b for b in budgets if selects(b["spec"]["selector"], pod_labels(deployment))]
        assert len(covering) == 1, name
        assert covering[0]["spec"].get("maxUnavailable") == 1 or covering[0]["spec"].get(
            "minAvailable") == 1


def _minimum_replicas(overlay: str, name: str) -> int:
    hpa = objects(overlay, "HorizontalPodAutoscaler").get(name)
    scaled = objects(overlay, "ScaledObject").get(name)
    if hpa is not None:
        return int(hpa["spec"]["minReplicas"])
    if scaled is not None:
        return int(scaled["spec"]["minReplicaCount"])
    return int(objects(overlay, "Deployment")[name]["spec"].get("replicas", 1))


def test_production_runs_two_of_each_service_development_one() -> None:
    for name in APP:
        assert _minimum_replicas("production", name) >= 2, name
        assert _minimum_replicas("development", name) == 1, name
    for overlay in OVERLAYS:
        for name in ("backend", "worker"):  # their autoscaler owns the count
            assert "replicas" not in objects(overlay, "Deployment")[name]["spec"]


def test_the_backend_scales_on_cpu() -> None:
    for overlay in OVERLAYS:
        hpa = objects(overlay, "HorizontalPodAutoscaler")["backend"]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["name"] == "backend"
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"


# -- selectors and services ------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_selector_matches_its_pods(overlay: str) -> None:
    for name, workload in workloads(overlay).items():
        if workload["kind"] != "Job":
            assert selects(workload["spec"]["selector"], pod_labels(workload)), name
    for name, service in objects(overlay, "Service").items():
        assert selected(overlay, {"matchLabels": service["spec"]["selector"]}) == {name}
        targets = {p["targetPort"] for p in service["spec"]["ports"]}
        workload = next(w for w in workloads(overlay).values() if component(w) == name)
        assert targets <= _port_names(the_container(workload)), name
    for name, budget in objects(overlay, "PodDisruptionBudget").items():
        assert selected(overlay, budget["spec"]["selector"]) == {name}
    for policy in objects(overlay, "NetworkPolicy").values():
        if policy["spec"]["podSelector"]:
            assert selected(overlay, policy["spec"]["podSelector"]), policy["metadata"]["name"]
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for scaler in objects(overlay, kind).values():
            assert scaler["spec"]["scaleTargetRef"]["name"] in objects(overlay, "Deployment")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_service_is_exposed_outside_the_cluster(overlay: str) -> None:
    for name, service in objects(overlay, "Service").items():
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", name


def test_the_data_stores_run_in_development_only() -> None:
    assert set(DATA_STORES) <= set(objects("development", "StatefulSet"))
    assert not objects("production", "StatefulSet")
    assert not set(DATA_STORES) & set(objects("production", "Service"))


# -- network policies ------------------------------------------------------------------

def _ports(rule: Obj) -> set[int] | None:
    """A rule's ports, None for every port."""
    return {int(p["port"]) for p in rule["ports"]} if rule.get("ports") else None


def _ingress_peers(overlay: str, target: str, port: int) -> list[Obj] | None:
    """What the ingress policies admit to ``port`` of ``target``'s pods: None for
    anyone (a rule without peers), else the peers."""
    peers: list[Obj] = []
    for policy in objects(overlay, "NetworkPolicy").values():
        spec = policy["spec"]
        if "Ingress" not in spec["policyTypes"] or target not in selected(
                overlay, spec["podSelector"]):
            continue
        for rule in spec.get("ingress", []):
            ports = _ports(rule)
            if ports is not None and port not in ports:
                continue
            if not rule.get("from"):
                return None
            peers += rule["from"]
    return peers


def _namespace(peer: Obj) -> str | None:
    return (peer.get("namespaceSelector") or {}).get("matchLabels", {}).get(
        "kubernetes.io/metadata.name")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_is_denied_unless_a_policy_admits_it(overlay: str) -> None:
    deny = objects(overlay, "NetworkPolicy")["default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert _ingress_peers(overlay, "backend", 8000) is None  # from anywhere
    assert _ingress_peers(overlay, "auth", 8001) is None
    backend_internal = _ingress_peers(overlay, "backend", 8010)
    assert backend_internal is not None and len(backend_internal) == 2
    assert {_namespace(p) for p in backend_internal} == {None, "monitoring"}
    assert selected(overlay, next(p for p in backend_internal if _namespace(p) is None)[
        "podSelector"]) == {"worker"}
    auth_internal = _ingress_peers(overlay, "auth", 8011)
    assert auth_internal is not None
    assert [_namespace(p) for p in auth_internal] == ["monitoring"]
    assert all("podSelector" not in p for p in auth_internal)
    for name in APP | {"migrate"}:
        for port in (5432, 6379, 8123, 9000):
            assert _ingress_peers(overlay, name, port) == [], f"{name}:{port}"


def test_development_data_stores_admit_their_clients_only() -> None:
    for store, ports in DATA_STORES.items():
        for port in ports & {5432, 6379, 8123}:
            peers = _ingress_peers("development", store, port)
            assert peers, f"{store}:{port} admits nobody, or anyone"
            for peer in peers:
                if _namespace(peer) == "keda":  # the autoscaler reads the run queue
                    assert store == "redis"
                    assert peer["podSelector"]["matchLabels"] == {
                        "app.kubernetes.io/name": "keda-operator"}
                    continue
                assert set(peer) == {"podSelector"}, f"{store}: {peer}"
                assert selected("development", peer["podSelector"]) <= CLIENTS[port], store
        for port in (22, 9000, 9009):
            assert _ingress_peers("development", store, port) == [], f"{store}:{port}"


def test_production_egress_reaches_the_data_stores_from_their_clients_only() -> None:
    policies = objects("production", "NetworkPolicy")
    deny = policies["default-deny-egress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Egress"]}
    reached: dict[int, set[str]] = {port: set() for port in CLIENTS}
    for name, policy in policies.items():
        spec = policy["spec"]
        for rule in spec.get("egress", []):
            ports = _ports(rule)
            assert ports is not None, f"{name}: egress to every port"
            for port in ports & set(CLIENTS):
                assert spec["podSelector"], f"{name}: every pod reaches {port}"
                sources = selected("production", spec["podSelector"])
                assert sources <= CLIENTS[port], f"{name}: {sources} reach {port}"
                reached[port] |= sources
    for port in (5432, 6379, 8123):
        assert reached[port] == CLIENTS[port], port


# -- images ----------------------------------------------------------------------------

def test_every_service_runs_the_one_image() -> None:
    for overlay, expected in (("development", "agentchat:local"),
                              ("production", "registry.example.com/agentchat:0.1.0")):
        images = {c["image"] for _, _, c in every_container(overlay)
                  if "agentchat" in c["image"]}
        assert images == {expected}


def test_the_documented_commands_name_real_paths() -> None:
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    for command in re.findall(r"^(?:kubectl|python) .*$", docs, re.M):
        for word in shlex.split(command.rstrip("\\"), comments=True):
            if word.startswith("deploy/"):
                assert (ROOT / word).exists(), word


def test_production_opens_nothing_it_need_not() -> None:
    """Auth's Service carries its public port alone (the internal one is scraped on
    the pods); the workers' way to a model provider skips the private networks; no
    proxy is trusted for the login throttle until the operator names one."""
    services = objects("production", "Service")
    assert [p["port"] for p in services["auth"]["spec"]["ports"]] == [8001]
    egress = objects("production", "NetworkPolicy")["worker-egress"]["spec"]["egress"]
    (anywhere,) = [to["ipBlock"] for rule in egress for to in rule.get("to", [])
                   if "ipBlock" in to and to["ipBlock"]["cidr"] == "0.0.0.0/0"]
    assert set(anywhere["except"]) >= {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                       "169.254.0.0/16"}
    config = objects("production", "ConfigMap")
    (settings,) = [c for name, c in config.items() if name.startswith("agentchat-config")]
    assert settings["data"]["forwarded-allow-ips"] == "127.0.0.1"
