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
    assert built.values == {p.name: values.get(p.name, p.default) for p in type(built).params}
    assert " " not in spec.label and parse_spec(spec.label) == spec  # a label reproduces its spec


@pytest.mark.parametrize("text, needle", [
    ("fast", "unknown method 'fast'"), ("", "expected METHOD"), ("dycoke:k", "expected KEY=VALUE"),
    ("dycoke:=0.5", "expected KEY=VALUE"), ("dycoke:k=", "expected KEY=VALUE"), ("dycoke:k=abc", "needs a number"),
    ("dycoke:k=1.5", "must be in [0, 1)"), ("dycoke:p=-0.1", "must be in [0, 1)"), ("none:k=0.5", "unknown key"),
    ("dycoke:k=0.5,k=0.6", "given twice"),
    ("dycoke:q=1", "its keys: k, variant, p, layer, gate, stage, encoder_layer, budget"), ("dycoke:stage=vit", "one of prefill, encoder"),
    ("dycoke:layer=0", "must be in >= 1"), ("dycoke:layer=2.5", "needs an integer"),
    ("dycoke:variant=fancy", "one of clean, reference"), ("dycoke:gate=never", "one of reuse, released"),
    ("dycoke:", "nothing after"), ("none:budget=0.5", "takes no token budget"), ("evs:budget=0", "at least 1 token"),
    ("evs:budget=1.5", "a share must be in (0, 1]"), ("evs:budget=-3", "at least 1 token"), ("evs:rate=nan", "finite"),
    ("evs:budget=abc", "'evs:budget=abc': budget: expected a share"),
])
def test_invalid_specs_raise_one_line(text, needle):
    with pytest.raises(SettingsError) as error:
        parse_spec(text)
    assert needle in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("text, share, count, tokens", [
    ("0.25", 0.25, None, 196), (".25", 0.25, None, 196), ("25%", 0.25, None, 196), ("0.001", 0.001, None, 1),
    ("1.0", 1.0, None, 784), ("100%", 1.0, None, 784), ("0.99999999999999999", 1.0, None, 784),
    ("300", None, 300, 300), ("1", None, 1, 1), ("785", None, 785, 784), ("5e-1", 0.5, None, 392),
])
def test_budget_grammar(text, share, count, tokens):
    """A share has a decimal point or a percent sign, a count is a bare whole number; a share stays a
    share however close to 1, and a count above the video's tokens keeps them all."""
    budget = Budget.parse(text)
    assert (budget.share, budget.count, budget.tokens(784)) == (share, count, tokens)
    assert Budget.parse(str(budget)) == budget  # printed as it would be typed


@pytest.mark.parametrize("text", ["0", "-1", "abc", "inf", "nan", "2.5", "1.5", "150%", "0%", "%", "\u00b9",
                                  "1e3", "10000000000"])
def test_budget_refusals_are_one_line(text):
    with pytest.raises(SettingsError) as refused:
        Budget.parse(text.encode().decode("unicode_escape"))
    assert "\n" not in str(refused.value) and str(refused.value).startswith("--budget '")


def test_flags_resolve_to_one_spec():
    assert resolve(None, False, None) == CompressionSpec("dycoke")
    assert resolve(None, True, None) == CompressionSpec("none")
    assert resolve("none", True, None) == CompressionSpec("none")
    assert resolve("evs", False, "0.5") == CompressionSpec("evs", (), Budget(share=0.5))
    assert resolve("evs:budget=10", False, "0.5").budget == Budget(count=10)  # the spec's own wins
    with pytest.raises(SettingsError, match="expected METHOD"):
        resolve("", False, None)  # an empty spec is not the default
    with pytest.raises(SettingsError, match="contradicts"):
        resolve("evs", True, None)
    with pytest.raises(SettingsError, match="takes no token budget"):
        resolve(None, True, "0.5")


def test_sweep():
    assert [s.label for s in parse_sweep("evs:budget=0.5,0.25")] == ["evs:budget=0.5", "evs:budget=0.25"]
    assert [s.label for s in parse_sweep("p=0.5,0.7")] == ["dycoke:p=0.5", "dycoke:p=0.7"]


def test_every_method_declares_itself_without_torch():
    code = ("import sys\nfrom dycoke_cli.commands.methods import troff\nprint(troff())\n"
            "assert 'torch' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name, cls in METHODS.items():
        assert cls.summary and f".B {name}" in out
        for p in cls.params:
            assert p.help and f".BR {p.name} " in out
