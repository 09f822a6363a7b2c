"""Random-weight models with real configurations: `random:<name>`.

They let anyone measure real shapes and timings (or run the test suite) without a download. A spec
is materialised once into a folder (config, safetensors, tokenizer, chat template, preprocessor
settings) and then loaded by the very same `from_pretrained` path as a real checkpoint, so loading,
quantization and device placement are exercised exactly as for a Hub model. Answers from these
models are meaningless; the stats say so.

These are test and benchmark tooling, kept apart from the family adapters (which are what a real
checkpoint needs): each family's builder and specs live in one module here, listed in BUILDERS. A
new family is one module plus a line there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dycoke_cli.errors import ModelError
from dycoke_cli.models.random_specs import llava_onevision, qwen, smolvlm
from dycoke_cli.models.random_specs.common import RandomSpec, is_built, spec_folder

RANDOM_PREFIX = "random:"

# (family name, its specs), in the order `dycoke models` lists them.
BUILDERS: list[tuple[str, list[RandomSpec]]] = [
    (llava_onevision.FAMILY, llava_onevision.SPECS),
    (qwen.QWEN2_5_VL, qwen.SPECS_2_5),
    (qwen.QWEN3_VL, qwen.SPECS_3),
    (smolvlm.FAMILY, smolvlm.SPECS),
]


def _declared() -> list[tuple[str, RandomSpec]]:
    declared, seen = [], set()
    for family, specs in BUILDERS:
        for spec in specs:
            if spec.name in seen:
                raise ValueError(f"random spec '{spec.name}' is declared twice")
            seen.add(spec.name)
            declared.append((family, spec))
    return declared


def all_specs() -> dict[str, RandomSpec]:
    """Every family's specs by name."""
    return {spec.name: spec for _, spec in _declared()}


def catalogue(root: Path | None = None) -> list[tuple[str, str, Path | None]]:
    """(name, family, folder or None when not built yet) of every spec, for `dycoke models`."""
    return [(spec.name, family, folder if is_built(folder := spec_folder(spec, root)) else None)
            for family, spec in _declared()]


def is_random_spec(spec: str) -> bool:
    return spec.startswith(RANDOM_PREFIX)


def random_spec(spec: str) -> RandomSpec:
    name = spec[len(RANDOM_PREFIX):]
    specs = all_specs()
    if name not in specs:
        known = ", ".join(RANDOM_PREFIX + n for n in specs)
        raise ModelError(f"unknown random model '{spec}'; known: {known}")
    return specs[name]


def materialise(spec: RandomSpec, root: Path | None = None) -> Path:
    """Build the spec's folder once (atomically: a crash never leaves a half folder) and return it."""
    folder = spec_folder(spec, root)
    if is_built(folder):
        return folder
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    spec.build(spec, tmp)
    try:
        tmp.rename(folder)
    except OSError:  # another process won the race; its folder is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
