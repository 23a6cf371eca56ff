"""Render the kustomize overlays of deploy/k8s without kustomize, and check them offline.

    python deploy/k8s/render.py build production     # what `kubectl kustomize` prints
    python deploy/k8s/render.py check                # every overlay: render and validate
    python deploy/k8s/render.py secret-keys production   # the Secret keys to create

The layout uses a small part of kustomize, and this file implements that part;
anything else in a kustomization.yaml is refused by name, so the output never
silently differs from kustomize's:

- ``resources``: YAML files inside the kustomization's directory, and directories
  holding another kustomization (``../../base``);
- ``namespace``, set on every namespaced object;
- ``images``: ``name`` with ``newName``, ``newTag`` or ``digest``, on the containers
  and init containers of pod templates;
- ``replicas``: ``name`` and ``count``;
- ``patches``: strategic-merge patches (``path`` or inline ``patch``), each found by
  its apiVersion, kind and name; lists with a Kubernetes merge key (containers,
  env, volumes, volume mounts, ports…) merge by that key, other lists are replaced,
  ``null`` deletes a field;
- ``configMapGenerator`` (``literals``, ``files``) and ``secretGenerator``
  (``literals``), with ``generatorOptions``/``options`` ``disableNameSuffixHash``:
  kustomize's content-hash suffix, and every reference to a generated name in a pod
  template updated;
- the output order of ``kubectl kustomize`` (kustomize's legacy order).

``check`` validates every object against the Kubernetes JSON schemas bundled in
the kubernetes-validate wheel (strict: an unknown field fails), for each version in
:data:`KUBERNETES_VERSIONS`, without a network or a cluster. KEDA's objects are not
in those schemas; they are checked structurally here (:func:`keda_problems`).
Where ``kubectl`` is installed, ``check`` also renders each overlay with
``kubectl kustomize`` and requires the same objects, in the same order.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
OVERLAYS = ("development", "production")
#: the oldest Kubernetes these manifests are meant for, and the newest the pinned
#: kubernetes-validate ships schemas for
KUBERNETES_VERSIONS = ("1.30", "1.37")
#: the Secret the production overlay expects to exist (it ships no value)
SECRET = "agentchat-secrets"
AUTH_KEYS_SECRET = "agentchat-auth-keys"

Obj = dict[str, Any]

KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "replicas",
                        "patches", "configMapGenerator", "secretGenerator", "generatorOptions"}
CLUSTER_SCOPED = {"Namespace", "Node", "PersistentVolume", "StorageClass", "ClusterRole",
                  "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass",
                  "IngressClass", "RuntimeClass", "ValidatingWebhookConfiguration",
                  "MutatingWebhookConfiguration", "APIService", "ClusterTriggerAuthentication"}
#: API groups whose types have strategic-merge keys; other lists (CRDs) are replaced
BUILTIN_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io"}
#: list fields that merge by a key (the Kubernetes types' patchMergeKey)
MERGE_KEYS = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name",
              "env": "name", "volumes": "name", "volumeMounts": "mountPath",
              "imagePullSecrets": "name", "volumeDevices": "devicePath",
              "topologySpreadConstraints": "topologyKey"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
SCALABLE = {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"}
# kustomize's legacy order (resid.Gvk.IsLessThan): these kinds first, in this order,
# the last ones last, every other kind between them by group_version_kind
ORDER_FIRST = ["Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition",
               "ServiceAccount", "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding",
               "ClusterRoleBinding", "ConfigMap", "Secret", "Endpoints", "Service",
               "LimitRange", "PriorityClass", "PersistentVolume", "PersistentVolumeClaim",
               "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget"]
ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]


class RenderError(Exception):
    """The layout uses something this renderer does not implement, or is inconsistent."""


@dataclass
class Resource:
    obj: Obj
    #: generated, and to get kustomize's content-hash suffix at the end
    hashed: bool = False

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        return str(self.obj.get("metadata", {}).get("name", ""))


# -- loading -------------------------------------------------------------------------

def _kustomization(directory: Path) -> Obj:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        path = directory / name
        if path.is_file():
            loaded = yaml.safe_load(path.read_text())
            if not isinstance(loaded, dict):
                raise RenderError(f"{path}: not a mapping")
            unknown = set(loaded) - KUSTOMIZATION_FIELDS
            if unknown:
                raise RenderError(f"{path}: not implemented here: {', '.join(sorted(unknown))}")
            return loaded
    raise RenderError(f"{directory}: no kustomization.yaml")


def _file_in(directory: Path, relative: str) -> Path:
    """kustomize's default load restriction: files only from the kustomization's root."""
    path = (directory / relative).resolve()
    if not path.is_relative_to(directory.resolve()):
        raise RenderError(f"{directory}: {relative} is outside the kustomization's directory")
    if not path.is_file():
        raise RenderError(f"{directory}: no file {relative}")
    return path


def _documents(path: Path) -> list[Obj]:
    # through JSON: YAML anchors become copies, not objects shared between fields
    docs = [json.loads(json.dumps(doc)) for doc in yaml.safe_load_all(path.read_text())
            if doc is not None]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise RenderError(f"{path}: every document needs apiVersion and kind")
    return docs


# -- transformers ----------------------------------------------------------------------

def _group(obj: Obj) -> str:
    api = str(obj["apiVersion"])
    return api.split("/")[0] if "/" in api else ""


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":  # a container's ports by containerPort, a Service's by port
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return MERGE_KEYS.get(field)


def strategic_merge(target: Any, patch: Any, *, builtin: bool, field: str = "") -> Any:
    """``patch`` merged into ``target`` as a strategic-merge patch (the subset above)."""
    if isinstance(patch, dict) and isinstance(target, dict):
        if any(str(k).startswith("$") for k in patch):
            raise RenderError(f"patch directive in {field or 'a patch'}: not implemented here")
        merged = dict(target)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, builtin=builtin, field=key)
            else:
                merged[key] = _strip_nulls(value)
        return merged
    if isinstance(patch, list) and isinstance(target, list) and builtin:
        key = _merge_key(field, patch + target)
        if key is not None and all(isinstance(i, dict) and key in i for i in patch + target):
            # kustomize's order: the patch's elements (merged into the target's of the
            # same key), then the target's other elements
            old = {item[key]: item for item in target}
            result = [strategic_merge(copy.deepcopy(old[item[key]]), item, builtin=builtin,
                                      field=field) if item[key] in old else _strip_nulls(item)
                      for item in patch]
            patched = {item[key] for item in patch}
            return result + [copy.deepcopy(i) for i in target if i[key] not in patched]
    return _strip_nulls(copy.deepcopy(patch))


def _apply_patches(directory: Path, entries: list[Obj], resources: list[Resource]) -> None:
    for entry in entries:
        unknown = set(entry) - {"path", "patch"}
        if unknown or len(entry) != 1:
            raise RenderError(f"{directory}: patches: only `path` or `patch` alone is "
                              f"implemented here (got {sorted(entry)})")
        text = (_file_in(directory, entry["path"]).read_text() if "path" in entry
                else str(entry["patch"]))
        for patch in (doc for doc in yaml.safe_load_all(text) if doc is not None):
            if not isinstance(patch, dict) or "kind" not in patch:
                raise RenderError(f"{directory}: only strategic-merge patches are implemented")
            name = patch.get("metadata", {}).get("name")
            matches = [r for r in resources if r.kind == patch["kind"] and r.name == name
                       and r.obj["apiVersion"] == patch.get("apiVersion")]
            if len(matches) != 1:
                raise RenderError(f"{directory}: the patch of {patch['kind']}/{name} matches "
                                  f"{len(matches)} resources")
            target = matches[0]
            target.obj = strategic_merge(target.obj, patch, builtin=_group(patch) in
                                         BUILTIN_GROUPS)


def pod_specs(obj: Obj) -> Iterator[Obj]:
    """The pod specs of a workload (a Deployment's template, a CronJob's job's…)."""
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        yield spec
    elif obj.get("kind") == "CronJob":
        yield spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    elif obj.get("kind") in WORKLOADS:
        yield spec.get("template", {}).get("spec", {})


def containers(obj: Obj) -> Iterator[Obj]:
    for pod in pod_specs(obj):
        yield from pod.get("initContainers", [])
        yield from pod.get("containers", [])


def _split_image(image: str) -> tuple[str, str, str]:
    """name, ":tag" or "", "@digest" or ""."""
    name, at, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon:], at + digest
    return name, "", at + digest


def _apply_images(directory: Path, entries: list[Obj], resources: list[Resource]) -> None:
    for entry in entries:
        unknown = set(entry) - {"name", "newName", "newTag", "digest"}
        if unknown or "name" not in entry:
            raise RenderError(f"{directory}: images: not implemented here: {sorted(unknown)}")
        for resource in resources:
            for container in containers(resource.obj):
                name, tag, digest = _split_image(str(container.get("image", "")))
                if name != entry["name"]:
                    continue
                if "digest" in entry:
                    tag, digest = "", "@" + str(entry["digest"])
                elif "newTag" in entry:
                    tag, digest = ":" + str(entry["newTag"]), ""
                container["image"] = str(entry.get("newName", name)) + tag + digest


def _apply_replicas(directory: Path, entries: list[Obj], resources: list[Resource]) -> None:
    for entry in entries:
        if set(entry) != {"name", "count"}:
            raise RenderError(f"{directory}: replicas: `name` and `count` only")
        matches = [r for r in resources if r.kind in SCALABLE and r.name == entry["name"]]
        if not matches:
            raise RenderError(f"{directory}: replicas: nothing named {entry['name']}")
        for resource in matches:
            resource.obj.setdefault("spec", {})["replicas"] = int(entry["count"])


def _apply_namespace(namespace: str, resources: list[Resource]) -> None:
    for resource in resources:
        if resource.kind not in CLUSTER_SCOPED:
            resource.obj.setdefault("metadata", {})["namespace"] = namespace


# -- generators ------------------------------------------------------------------------

def _literal(directory: Path, source: str) -> tuple[str, str]:
    key, sep, value = source.partition("=")
    if not sep or not key:
        raise RenderError(f"{directory}: literal {source.split('=')[0]!r} is not KEY=VALUE")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        raise RenderError(f"{directory}: literal {key}: quoted values are not implemented here")
    return key, value


def _generated(directory: Path, kind: str, entry: Obj, hash_by_default: bool) -> Resource:
    allowed = {"name", "literals", "options"} | ({"files"} if kind == "ConfigMap" else {"type"})
    unknown = set(entry) - allowed
    if unknown:
        raise RenderError(f"{directory}: {kind} generator: not implemented here: "
                          f"{sorted(unknown)}")
    options = entry.get("options") or {}
    if set(options) - {"disableNameSuffixHash"}:
        raise RenderError(f"{directory}: generator options: only disableNameSuffixHash")
    data: dict[str, str] = {}
    pairs = [_literal(directory, str(s)) for s in entry.get("literals", [])]
    for source in entry.get("files", []):
        key, sep, relative = str(source).partition("=")
        if not sep:
            key, relative = Path(source).name, str(source)
        pairs.append((key, _file_in(directory, relative).read_text()))
    for key, value in pairs:
        if key in data:
            raise RenderError(f"{directory}: {entry['name']}: key {key} given twice")
        data[key] = value
    obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": entry["name"]}}
    if kind == "Secret":
        obj["type"] = entry.get("type", "Opaque")
        obj["data"] = {k: _base64(v) for k, v in data.items()}
    else:
        obj["data"] = data
    hashed = not options.get("disableNameSuffixHash", not hash_by_default)
    return Resource(obj, hashed=hashed)


def _base64(value: str) -> str:
    """As kustomize encodes a Secret's value: base64 in lines of 70 characters, each
    ended by a newline when there is more than one (Kubernetes' decoder skips them)."""
    encoded = base64.b64encode(value.encode()).decode()
    if len(encoded) < 70:
        return encoded
    return "".join(encoded[i:i + 70] + "\n" for i in range(0, len(encoded), 70))


def _go_json(value: Any) -> str:
    """``json.Marshal`` of Go: sorted keys, no spaces, HTML characters escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def name_hash(obj: Obj) -> str:
    """kustomize's suffix (api/hasher): sha256 of the object's essentials as JSON, its
    first 10 hex digits with 0, 1, 3, a, e swapped for letters. The name is empty
    there: kustomize looks it up as one field named "metadata/name", which no object
    has (so two generators with the same data get the same suffix); compared with
    ``kubectl kustomize`` by ``check``."""
    essentials: Obj = {"kind": obj["kind"], "name": "", "data": obj.get("data") or {}}
    if obj["kind"] == "Secret":
        essentials["type"] = obj.get("type", "")
    digest = hashlib.sha256(_go_json(essentials).encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _rename_references(resources: list[Resource], renamed: dict[tuple[str, str], str]) -> None:
    """The references of pod templates to generated ConfigMaps and Secrets."""
    def fix(kind: str, holder: Obj | None, field: str) -> None:
        if holder and (kind, holder.get(field)) in renamed:
            holder[field] = renamed[(kind, holder[field])]

    for resource in resources:
        for pod in pod_specs(resource.obj):
            for volume in pod.get("volumes", []):
                fix("ConfigMap", volume.get("configMap"), "name")
                fix("Secret", volume.get("secret"), "secretName")
                for source in (volume.get("projected") or {}).get("sources", []):
                    fix("ConfigMap", source.get("configMap"), "name")
                    fix("Secret", source.get("secret"), "name")
            for secret in pod.get("imagePullSecrets", []):
                fix("Secret", secret, "name")
        for container in containers(resource.obj):
            for env in container.get("env", []):
                source = env.get("valueFrom") or {}
                fix("ConfigMap", source.get("configMapKeyRef"), "name")
                fix("Secret", source.get("secretKeyRef"), "name")
            for env_from in container.get("envFrom", []):
                fix("ConfigMap", env_from.get("configMapRef"), "name")
                fix("Secret", env_from.get("secretRef"), "name")


# -- the build -------------------------------------------------------------------------

def _accumulate(directory: Path, seen: tuple[Path, ...] = ()) -> list[Resource]:
    directory = directory.resolve()
    if directory in seen:
        raise RenderError(f"{directory}: a cycle of kustomizations")
    kustomization = _kustomization(directory)
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = (directory / str(entry)).resolve()
        if path.is_dir():
            resources += _accumulate(path, (*seen, directory))
        else:
            resources += [Resource(doc) for doc in _documents(_file_in(directory, str(entry)))]
    options = kustomization.get("generatorOptions") or {}
    if set(options) - {"disableNameSuffixHash"}:
        raise RenderError(f"{directory}: generatorOptions: only disableNameSuffixHash")
    hash_by_default = not options.get("disableNameSuffixHash", False)
    for entry in kustomization.get("configMapGenerator", []):
        resources.append(_generated(directory, "ConfigMap", entry, hash_by_default))
    for entry in kustomization.get("secretGenerator", []):
        resources.append(_generated(directory, "Secret", entry, hash_by_default))
    ids = [(r.obj["apiVersion"], r.kind, r.name) for r in resources]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise RenderError(f"{directory}: defined twice: {sorted(duplicates)}")
    # kustomize's order of builtin transformers
    _apply_patches(directory, kustomization.get("patches", []), resources)
    if "namespace" in kustomization:
        _apply_namespace(str(kustomization["namespace"]), resources)
    _apply_replicas(directory, kustomization.get("replicas", []), resources)
    _apply_images(directory, kustomization.get("images", []), resources)
    return resources


def _gvk_string(obj: Obj) -> str:
    group, _, version = str(obj["apiVersion"]).rpartition("/")
    return "_".join([group or "~G", version or "~V", str(obj["kind"]) or "~K"])


def _order(obj: Obj) -> tuple[int, str, str, str]:
    kind = str(obj["kind"])
    if kind in ORDER_FIRST:
        rank = ORDER_FIRST.index(kind) - len(ORDER_FIRST)
    elif kind in ORDER_LAST:
        rank = 1 + ORDER_LAST.index(kind)
    else:
        rank = 0
    metadata = obj.get("metadata", {})
    return rank, _gvk_string(obj), str(metadata.get("namespace", "")), str(metadata["name"])


def overlay_dir(name: str) -> Path:
    """An overlay by name (``production``) or any kustomization directory."""
    candidate = HERE / "overlays" / name
    plain = "/" not in name and name not in (".", "..")
    return candidate if plain and candidate.is_dir() else Path(name)


def render(directory: Path | str) -> list[Obj]:
    """The objects ``kubectl kustomize DIRECTORY`` prints, in its order."""
    resources = _accumulate(overlay_dir(str(directory)))
    renamed: dict[tuple[str, str], str] = {}
    for resource in resources:
        if resource.hashed:
            new = f"{resource.name}-{name_hash(resource.obj)}"
            renamed[(resource.kind, resource.name)] = new
            resource.obj["metadata"]["name"] = new
    _rename_references(resources, renamed)
    return sorted((r.obj for r in resources), key=_order)


def dump(objs: list[Obj]) -> str:
    return yaml.safe_dump_all(objs, sort_keys=False, default_flow_style=False)


# -- checks ----------------------------------------------------------------------------

KEDA_SCALEDOBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod",
                          "initialCooldownPeriod", "idleReplicaCount", "minReplicaCount",
                          "maxReplicaCount", "fallback", "advanced", "triggers"}
#: the redis-streams scaler's metadata (keda.sh/docs/scalers/redis-streams)
REDIS_STREAMS_METADATA = {"address", "host", "port", "addressFromEnv", "hostFromEnv",
                          "portFromEnv", "usernameFromEnv", "passwordFromEnv", "stream",
                          "consumerGroup", "pendingEntriesCount", "streamLength", "lagCount",
                          "activationLagCount", "activationStreamLength",
                          "activationPendingEntriesCount", "enableTLS", "unsafeSsl",
                          "databaseIndex"}
REDIS_AUTH_PARAMETERS = {"address", "host", "port", "username", "password", "tls", "ca",
                         "cert", "key", "keyPassword"}


def _by_kind(objs: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def keda_problems(objs: list[Obj]) -> list[str]:
    """KEDA's ScaledObject and TriggerAuthentication, checked against what KEDA's
    documentation requires (their CRDs are not in the Kubernetes schemas)."""
    problems: list[str] = []
    deployments = _by_kind(objs, "Deployment")
    auths = _by_kind(objs, "TriggerAuthentication")
    secrets = _by_kind(objs, "Secret")
    for obj in objs:
        if not str(obj["apiVersion"]).startswith("keda.sh/"):
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"] != "keda.sh/v1alpha1":
            problems.append(f"{where}: apiVersion {obj['apiVersion']} (keda.sh/v1alpha1)")
        spec = obj.get("spec") or {}
        if set(obj) - {"apiVersion", "kind", "metadata", "spec"}:
            problems.append(f"{where}: unknown top-level fields")
        if obj["kind"] == "ScaledObject":
            problems += [f"{where}: unknown spec field {k}" for k in
                         sorted(set(spec) - KEDA_SCALEDOBJECT_SPEC)]
            target = (spec.get("scaleTargetRef") or {}).get("name")
            if target not in deployments:
                problems.append(f"{where}: scaleTargetRef {target} is no Deployment here")
            low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
            if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high):
                problems.append(f"{where}: minReplicaCount/maxReplicaCount")
            triggers = spec.get("triggers") or []
            if not triggers:
                problems.append(f"{where}: no triggers")
            for n, trigger in enumerate(triggers):
                problems += _trigger_problems(f"{where} trigger {n}", trigger, auths)
        elif obj["kind"] == "TriggerAuthentication":
            problems += [f"{where}: unknown spec field {k}" for k in
                         sorted(set(spec) - {"secretTargetRef", "env", "podIdentity"})]
            for ref in spec.get("secretTargetRef") or []:
                if set(ref) != {"parameter", "name", "key"}:
                    problems.append(f"{where}: secretTargetRef needs parameter, name, key")
                elif ref["parameter"] not in REDIS_AUTH_PARAMETERS:
                    problems.append(f"{where}: unknown parameter {ref['parameter']}")
                elif ref["name"] in secrets:
                    if ref["key"] not in secrets[ref["name"]].get("data", {}):
                        problems.append(f"{where}: Secret {ref['name']} has no {ref['key']}")
                elif ref["name"] != SECRET:
                    problems.append(f"{where}: Secret {ref['name']} is not known")
        else:
            problems.append(f"{where}: not a KEDA kind this layout knows")
    return problems


def _trigger_problems(where: str, trigger: Obj, auths: dict[str, Obj]) -> list[str]:
    problems: list[str] = []
    if trigger.get("type") != "redis-streams":
        return [f"{where}: type {trigger.get('type')} (this layout uses redis-streams)"]
    metadata = trigger.get("metadata") or {}
    problems += [f"{where}: unknown metadata {k}" for k in
                 sorted(set(metadata) - REDIS_STREAMS_METADATA)]
    problems += [f"{where}: metadata {k} must be a string" for k, v in metadata.items()
                 if not isinstance(v, str)]
    modes = [k for k in ("pendingEntriesCount", "lagCount", "streamLength") if k in metadata]
    if len(modes) != 1:
        problems.append(f"{where}: one of pendingEntriesCount, lagCount, streamLength")
    if modes and modes[0] != "streamLength" and "consumerGroup" not in metadata:
        problems.append(f"{where}: {modes[0]} needs consumerGroup")
    for key in ("pendingEntriesCount", "lagCount", "activationLagCount"):
        if key in metadata and not str(metadata[key]).isdigit():
            problems.append(f"{where}: {key} must be a whole number")
    if "stream" not in metadata:
        problems.append(f"{where}: no stream")
    auth = (trigger.get("authenticationRef") or {}).get("name")
    has_address = any(k in metadata for k in ("address", "host", "addressFromEnv"))
    if auth is not None and auth not in auths:
        problems.append(f"{where}: authenticationRef {auth} is not here")
    elif auth is not None and not has_address:
        parameters = {r["parameter"] for r in auths[auth]["spec"].get("secretTargetRef", [])}
        has_address = bool({"address", "host"} & parameters)
    if not has_address:
        problems.append(f"{where}: no Redis address")
    return problems


def schema_problems(objs: list[Obj], version: str) -> list[str]:
    """Every non-KEDA object against the Kubernetes ``version`` schemas, strictly."""
    import kubernetes_validate  # type: ignore[import-untyped]

    problems = []
    for obj in objs:
        if str(obj["apiVersion"]).startswith("keda.sh/"):
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            problems.append(f"{where}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{where}: {error.message}")
    return problems


def secret_keys(objs: list[Obj], secret: str = SECRET) -> set[str]:
    """The keys of ``secret`` the rendered objects read."""
    keys = set()
    for obj in objs:
        for container in containers(obj):
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
                if ref.get("name") == secret:
                    keys.add(str(ref["key"]))
        for ref in (obj.get("spec") or {}).get("secretTargetRef", []) if \
                obj["kind"] == "TriggerAuthentication" else []:
            if ref.get("name") == secret:
                keys.add(str(ref["key"]))
    return keys


def kubectl_kustomize(directory: Path) -> list[Obj] | None:
    """``kubectl kustomize`` of the directory, or None without kubectl."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                            text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory}: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def kubectl_version() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return ""
    result = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True,
                            timeout=60, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("Kustomize")]
    return lines[0].split(":", 1)[1].strip() if lines else "unknown"


def compare(mine: list[Obj], theirs: list[Obj]) -> list[str]:
    """Where two renderings differ (the same objects, in the same order)."""
    def ident(o: Obj) -> str:
        return f"{o['kind']}/{o['metadata']['name']}"

    if [ident(o) for o in mine] != [ident(o) for o in theirs]:
        return [f"objects differ: {[ident(o) for o in mine]} != {[ident(o) for o in theirs]}"]
    return [f"{ident(a)} differs" for a, b in zip(mine, theirs, strict=True) if a != b]


def check(overlays: tuple[str, ...] = OVERLAYS, *, out: Any = sys.stdout) -> int:
    validator = importlib_metadata.version("kubernetes-validate")
    failed = 0
    kustomize = kubectl_version()
    for name in overlays:
        started = time.monotonic()
        directory = overlay_dir(name)
        objs = render(directory)
        problems = [f"{v}: {p}" for v in KUBERNETES_VERSIONS for p in schema_problems(objs, v)]
        problems += keda_problems(objs)
        keda = sum(str(o["apiVersion"]).startswith("keda.sh/") for o in objs)
        print(f"{name}: {len(objs)} objects rendered; {len(objs) - keda} valid against the "
              f"Kubernetes {' and '.join(KUBERNETES_VERSIONS)} schemas (strict, "
              f"kubernetes-validate {validator})" if not problems
              else f"{name}: {len(objs)} objects rendered", file=out)
        if keda and not problems:
            print(f"{name}: {keda} KEDA objects checked structurally (no schema for CRDs)",
                  file=out)
        theirs = kubectl_kustomize(directory)
        if theirs is None:
            print(f"{name}: kubectl not found: the comparison with kustomize was skipped",
                  file=out)
        else:
            differences = compare(objs, theirs)
            problems += [f"kubectl kustomize: {d}" for d in differences]
            if not differences:
                print(f"{name}: identical to `kubectl kustomize` (kustomize {kustomize})",
                      file=out)
        for problem in problems:
            print(f"{name}: FAILED: {problem}", file=out)
        print(f"{name}: {time.monotonic() - started:.1f} s", file=out)
        failed += bool(problems)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python deploy/k8s/render.py", description=__doc__
                                     .split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="print an overlay as kubectl kustomize would")
    build.add_argument("overlay", help="development, production, or a kustomization directory")
    checking = commands.add_parser("check", help="render and validate every overlay")
    checking.add_argument("overlays", nargs="*", default=list(OVERLAYS))
    keys = commands.add_parser("secret-keys", help=f"the keys of {SECRET} an overlay reads")
    keys.add_argument("overlay")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            sys.stdout.write(dump(render(args.overlay)))
            return 0
        if args.command == "secret-keys":
            print("\n".join(sorted(secret_keys(render(args.overlay)))))
            return 0
        return check(tuple(args.overlays))
    except RenderError as error:
        print(f"render.py: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
