"""The `--compress SPEC` grammar, shared by every command and by batch records.

    SPEC   := METHOD [":" KEY "=" VALUE ("," KEY "=" VALUE)*]
    METHOD := none | dycoke | evs | vidcom2 | fastv | uniform | random | dynamics
    KEY    := a parameter the method declares, or `budget` (overrides --budget for this spec)

e.g. `none`, `dycoke`, `dycoke:k=0.5,p=0.8,layer=3,gate=released,variant=reference`, `evs:rate=0.75`,
`fastv:layer=2,rate=0.5`, `random:budget=0.25`. Parsing checks names, types and ranges from the
methods' own declarations, so every mistake is one line before anything heavy loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dycoke_cli.compress.base import Budget, Method
from dycoke_cli.compress.registry import METHODS, method_class
from dycoke_cli.errors import SettingsError

DEFAULT = "dycoke"


@dataclass(frozen=True)
class CompressionSpec:
    """A parsed, validated spec: the method, the values given explicitly, and the budget."""

    method: str
    values: tuple[tuple[str, Any], ...] = ()
    budget: Budget | None = None

    def build(self) -> Method:
        """The method these settings describe."""
        return method_class(self.method)(dict(self.values), self.budget)

    @property
    def label(self) -> str:
        """The spec as written (normalised): names a row of a report, groups batch records."""
        pairs = [f"{k}={v}" for k, v in self.values]
        if self.budget is not None:
            pairs.append(f"budget={self.budget}")
        return self.method + (":" + ",".join(pairs) if pairs else "")

    def with_budget(self, budget: Budget | None) -> "CompressionSpec":
        """This spec under a command-wide --budget (a budget in the spec itself wins)."""
        if budget is None or self.budget is not None:
            return self
        _check_budget(self.method, f"--budget {budget} with '{self.method}'")
        return CompressionSpec(self.method, self.values, budget)


def _check_budget(method: str, where: str) -> None:
    if method_class(method).budget_solves is None:
        raise SettingsError(f"{where}: method '{method}' takes no token budget")


def parse_spec(text: str, where: str = "--compress") -> CompressionSpec:
    """One SPEC -> CompressionSpec, or a SettingsError naming the problem."""
    spec = "".join(text.split())
    where = f"{where} '{spec}'"
    name, colon, rest = spec.partition(":")
    if not name:
        raise SettingsError(f"{where}: expected METHOD[:KEY=VALUE,...], e.g. dycoke:k=0.5")
    if name not in METHODS:
        raise SettingsError(f"{where}: unknown method '{name}'; methods: {', '.join(METHODS)}")
    cls = method_class(name)
    if colon and not rest:
        raise SettingsError(f"{where}: nothing after ':'")
    values: dict[str, Any] = {}
    budget = None
    for pair in rest.split(",") if rest else []:
        key, eq, value = pair.partition("=")
        if not eq or not key or not value:
            raise SettingsError(f"{where}: expected KEY=VALUE, got '{pair}'")
        if key in values or (key == "budget" and budget is not None):
            raise SettingsError(f"{where}: '{key}' is given twice")
        if key == "budget":
            _check_budget(name, where)
            budget = Budget.parse(value, f"{where}: budget")
            continue
        known = [p.name for p in cls.params]
        if key not in known:
            keys = ", ".join(known + (["budget"] if cls.budget_solves else [])) or "none"
            raise SettingsError(f"{where}: unknown key '{key}' for {name}; its keys: {keys}")
        values[key] = cls.param(key).parse(value, where)
    return CompressionSpec(name, tuple(values.items()), budget)


def resolve(compress: str | None, no_compress: bool, budget: str | None) -> CompressionSpec:
    """The one spec of ask/chat/run from their flags: --no-compress is `none`; --budget applies."""
    if no_compress and compress not in (None, "none"):
        raise SettingsError(f"--no-compress contradicts --compress {compress}")
    spec = parse_spec("none" if no_compress else DEFAULT if compress is None else compress)
    return spec.with_budget(Budget.parse(budget) if budget is not None else None)


def parse_sweep(text: str) -> list[CompressionSpec]:
    """`[METHOD:]KEY=V1,V2,...` -> one spec per value (METHOD defaults to dycoke); KEY may be budget."""
    spec = "".join(text.split())
    head, eq, values = spec.partition("=")
    name, colon, key = head.rpartition(":")
    if not eq or not key or not values or (colon and not name) or any(not v for v in values.split(",")):
        raise SettingsError(f"--sweep '{spec}': expected [METHOD:]KEY=V1,V2,... e.g. dycoke:k=0.3,0.5,0.7")
    return [parse_spec(f"{name or DEFAULT}:{key}={v}", "--sweep") for v in values.split(",")]
