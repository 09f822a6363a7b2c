"""The `--compress METHOD:KEY=VALUE,...` grammar and `--budget`, from the methods' own declarations."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dycoke_cli.compress.base import Budget
from dycoke_cli.compress.registry import METHODS
from dycoke_cli.compress.spec import CompressionSpec, parse_spec, parse_sweep, resolve
from dycoke_cli.errors import SettingsError


@pytest.mark.parametrize("text, method, values, budget", [
    ("none", "none", {}, None),
    ("dycoke", "dycoke", {}, None),
    ("dycoke:k=0.5", "dycoke", {"k": 0.5}, None),
    ("dycoke:k=0.5,p=0.8,layer=3,gate=released,variant=reference", "dycoke",
     {"k": 0.5, "p": 0.8, "layer": 3, "gate": "released", "variant": "reference"}, None),
    ("evs:rate=0.75", "evs", {"rate": 0.75}, None),
    ("fastv:layer=2,rate=0.5", "fastv", {"layer": 2, "rate": 0.5}, None),
    ("random:budget=0.25", "random", {}, 0.25),
    ("dynamics:budget=64,seed=3", "dynamics", {"seed": 3}, 64),
    (" dycoke : k = 0.5 ", "dycoke", {"k": 0.5}, None),
])
def test_valid_specs_parse(text, method, values, budget):
    spec = parse_spec(text)
    assert (spec.method, dict(spec.values), spec.budget and spec.budget.value) == (method, values, budget)
    built = spec.build()
    assert built.effective() == {p.name: values.get(p.name, p.default) for p in type(built).params}
    assert " " not in spec.label and parse_spec(spec.label) == spec  # a label reproduces its spec


@pytest.mark.parametrize("text, needle", [
    ("fast", "unknown method 'fast'"), ("", "expected METHOD"), ("dycoke:k", "expected KEY=VALUE"),
    ("dycoke:=0.5", "expected KEY=VALUE"), ("dycoke:k=", "expected KEY=VALUE"), ("dycoke:k=abc", "needs a number"),
    ("dycoke:k=1.5", "must be in [0, 1)"), ("dycoke:p=-0.1", "must be in [0, 1)"), ("none:k=0.5", "unknown key"),
    ("dycoke:k=0.5,k=0.6", "given twice"), ("dycoke:q=1", "its keys: k, variant, p, layer, gate, budget"),
    ("dycoke:layer=0", "must be in >= 1"), ("dycoke:layer=2.5", "needs an integer"),
    ("dycoke:variant=fancy", "one of clean, reference"), ("dycoke:gate=never", "one of reuse, released"),
    ("dycoke:", "nothing after"), ("none:budget=0.5", "takes no token budget"), ("evs:budget=0", "share in (0, 1)"),
    ("evs:budget=1.5", "whole number"), ("evs:budget=-3", "share in (0, 1)"), ("evs:rate=nan", "finite"),
])
def test_invalid_specs_raise_one_line(text, needle):
    with pytest.raises(SettingsError) as error:
        parse_spec(text)
    assert needle in str(error.value) and "\n" not in str(error.value)


def test_budget_shares_and_counts():
    assert Budget.parse("0.25").tokens(784) == 196
    assert Budget.parse("0.001").tokens(784) == 1  # a share rounds down, but never to nothing
    assert Budget.parse("300").tokens(784) == 300 and not Budget.parse("300").is_share
    assert Budget.parse("1").tokens(784) == 1
    with pytest.raises(SettingsError, match="above the video's 784 visual tokens"):
        Budget.parse("785").tokens(784)
    for bad in ("0", "-1", "abc", "inf", "2.5"):
        with pytest.raises(SettingsError):
            Budget.parse(bad)


def test_flags_resolve_to_one_spec():
    assert resolve(None, False, None) == CompressionSpec("dycoke")
    assert resolve(None, True, None) == CompressionSpec("none")
    assert resolve("none", True, None) == CompressionSpec("none")
    assert resolve("evs", False, "0.5") == CompressionSpec("evs", (), Budget(0.5))
    assert resolve("evs:budget=10", False, "0.5").budget == Budget(10)  # the spec's own wins
    with pytest.raises(SettingsError, match="contradicts"):
        resolve("evs", True, None)
    with pytest.raises(SettingsError, match="takes no token budget"):
        resolve(None, True, "0.5")


def test_sweep():
    assert [s.label for s in parse_sweep("evs:budget=0.5,0.25")] == ["evs:budget=0.5", "evs:budget=0.25"]
    assert [s.label for s in parse_sweep("p=0.5,0.7")] == ["dycoke:p=0.5", "dycoke:p=0.7"]


def test_every_method_declares_itself_without_torch():
    code = ("import sys\nfrom dycoke_cli.compress.spec import describe_methods\nprint(describe_methods())\n"
            "assert 'torch' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name, cls in METHODS.items():
        assert cls.summary and name in out
        for p in cls.params:
            assert p.help and f"{p.name}={p.default} ({p.domain()})" in out
