"""The suite's settings: ``e2e/thresholds.toml``, its smoke overrides, then ``E2E_*``.

One file holds every workload size and every pass/fail limit, with the original
platform's figure beside each, so a team tunes the suite in one place and the
report can show what each verdict was measured against. A limit is a key named
``max_<measure>`` or ``min_<measure>``; the verdict is computed, never written by
a scenario, so no scenario can forget to check its own limits.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["DEFAULT_PATH", "Check", "Limit", "Settings", "ThresholdError", "judge", "load"]

DEFAULT_PATH = Path(__file__).with_name("thresholds.toml")
Scale = Literal["smoke", "full"]
_RESERVED = ("smoke", "compose", "original")


class ThresholdError(ValueError):
    """The settings file or an ``E2E_*`` variable is wrong; the message says where."""


@dataclass(frozen=True)
class Limit:
    """``measure`` must stay at or under (``max``) or at or over (``min``) ``value``."""

    key: str  # as written: max_p95_run_ms
    measure: str  # p95_run_ms
    kind: Literal["max", "min"]
    value: float
    original: str = ""
    #: from ``[all]``: applies only to scenarios that take the measure
    shared: bool = False

    def holds(self, measured: float) -> bool:
        if math.isnan(measured):
            return False
        return measured <= self.value if self.kind == "max" else measured >= self.value

    @property
    def text(self) -> str:
        return f"{'≤' if self.kind == 'max' else '≥'} {self.value:g}"


@dataclass(frozen=True)
class Check:
    """One limit against what was measured: a row of the report's pass/fail table."""

    measure: str
    kind: Literal["max", "min"]
    limit: float
    value: float | None  # None: not measured
    passed: bool
    original: str = ""
    note: str = ""


def judge(limits: list[Limit], metrics: Mapping[str, float],
          unmeasurable: Iterable[str] = ()) -> list[Check]:
    """Each limit against ``metrics``. A measure that is missing fails ("not
    measured"), unless it is in ``unmeasurable`` (the driver cannot take it): then
    the check passes with a note, and the report shows it was skipped. A shared
    limit (``[all]``) only judges scenarios that took its measure."""
    skipped = set(unmeasurable)
    checks = []
    for limit in limits:
        value = metrics.get(limit.measure)
        if value is None and limit.shared:
            continue
        if value is None:
            note = ("not available from this driver" if limit.measure in skipped
                    else "not measured")
            checks.append(Check(limit.measure, limit.kind, limit.value, None,
                                limit.measure in skipped, limit.original, note))
        else:
            checks.append(Check(limit.measure, limit.kind, limit.value, float(value),
                                limit.holds(float(value)), limit.original))
    return checks


@dataclass(frozen=True)
class Settings:
    scale: Scale
    tables: dict[str, dict[str, Any]]  # after overrides
    original: dict[str, str]
    source: str

    def section(self, name: str) -> dict[str, Any]:
        """Workload values and limits of one table (the scenario's own)."""
        return dict(self.tables.get(name, {}))

    def limits(self, name: str) -> list[Limit]:
        """The limits a scenario is judged by: its own, then ``[all]`` ones it does not
        override."""
        own = self.tables.get(name, {})
        shared = {k: v for k, v in self.tables.get("all", {}).items() if k not in own}
        found = []
        for table, values in ((name, own), ("all", shared)):
            for key, value in values.items():
                if key.startswith(("max_", "min_")):
                    found.append(Limit(key, key[4:], "max" if key[:3] == "max" else "min",
                                       float(value), self.original.get(f"{table}.{key}", ""),
                                       shared=table == "all"))
        return found

    def as_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "source": self.source, "tables": self.tables}


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def load(scale: Scale = "full", path: Path | None = None,
         env: Mapping[str, str] | None = None, *, stack: str = "local") -> Settings:
    """The settings for ``scale`` from ``path`` (default: the file beside this module),
    the ``[compose.<table>]`` overrides on the compose stack, with ``E2E_<TABLE>__<KEY>``
    variables from ``env`` (default: ``os.environ``) on top."""
    path = path or DEFAULT_PATH
    env = os.environ if env is None else env
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ThresholdError(f"{path}: {exc}") from exc
    tables: dict[str, dict[str, Any]] = {}
    for name, values in document.items():
        if name in _RESERVED:
            continue
        if not isinstance(values, dict):
            raise ThresholdError(f"{path}: {name} is not a table")
        tables[name] = dict(values)
    overrides = [part for part, wanted in (("smoke", scale == "smoke"),
                                           ("compose", stack == "compose")) if wanted]
    for part in overrides:
        for name, values in document.get(part, {}).items():
            _merge(tables, name, values, f"{path} [{part}.{name}]")
    for variable, raw in sorted(env.items()):
        if not variable.startswith("E2E_") or "__" not in variable:
            continue
        table, key = variable[4:].lower().split("__", 1)
        _merge(tables, table, {key: _parse_env_value(raw)}, variable)
    for name, values in tables.items():
        for key, value in values.items():
            if key.startswith(("max_", "min_")) and (
                    isinstance(value, bool) or not isinstance(value, int | float)):
                raise ThresholdError(f"{name}.{key} must be a number, not {value!r}")
    original = {str(k): str(v) for k, v in document.get("original", {}).items()}
    return Settings(scale, tables, original, str(path))


def _merge(tables: dict[str, dict[str, Any]], name: str, values: dict[str, Any],
           where: str) -> None:
    """Override known keys only: a typo in a variable must not pass silently."""
    if name not in tables:
        raise ThresholdError(f"{where}: no table [{name}]; have {', '.join(sorted(tables))}")
    for key, value in values.items():
        if key not in tables[name]:
            raise ThresholdError(f"{where}: [{name}] has no key {key!r}; "
                                 f"have {', '.join(sorted(tables[name]))}")
        tables[name][key] = value
