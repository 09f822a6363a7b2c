"""Trained checkpoints shipped inside the package: `builtin:<name>`.

`builtin:shapes` is a ~1M-parameter LLaVA-OneVision (the real transformers class) trained on the
procedural clips of dycoke_cli/shapes.py (benchmarks/shapes/train.py made it). Unlike `random:`
models its answers are meaningful, so accuracy under each compression method can be measured on a
CPU in minutes, offline, with nothing to download.

The files live in dycoke_cli/builtin/<name>/ (package data, so an installed package has them) and
load through the same `from_pretrained` path as any checkpoint folder. Their SHA-256 digests are
pinned here, in code, and checked at every load: a damaged or swapped file is refused in one line
instead of silently giving other answers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from dycoke_cli.errors import ModelError

BUILTIN_PREFIX = "builtin:"
ROOT = Path(__file__).resolve().parent.parent / "builtin"

# name -> (family, {file: SHA-256}); benchmarks/shapes/train.py --install rewrites the digests.
BUILTINS: dict[str, tuple[str, dict[str, str]]] = {
    "shapes": ("LLaVA-OneVision", {
        # digests of shapes: begin
        "config.json": "970572843062e71a054eee0f66dc5d15870845b9aad60d0c215e2068365cfca5",
        "generation_config.json": "2fbc5c3878b51ac620639900bd97feaea68d6f80666ddcd0175c9eb72e4bc5e6",
        "model.safetensors": "336b64105156fd4ac071a61f2b1d01fdca1f54564fc4697ec46b7c19ced37cc5",
        "tokenizer.json": "b271042f2da1db93bdb727570d8842e90fbf7d91d0c7be2885e6d3354bd59007",
        "tokenizer_config.json": "d5226386a55464613b4ae24ad266fcb7a588f3b582134bdfd4c2c98e00bb0d19",
        "chat_template.jinja": "768ff82b381946eb3add17b06b7b499d832881904721ac39fc7a1051bd947eb7",
        "video_preprocessor_config.json": "302bbbf5920fc39c0ffe73f457d50fd633d6cc3671382aa3245d7f1cbecf60ce",
        "shapes_training.json": "7c2aabb93937c6b274a42770a1cbdab1d9499c3b9eb1cbdee29a5243479c5693",
        # digests of shapes: end
    }),
}


def is_builtin_spec(spec: str) -> bool:
    return spec.startswith(BUILTIN_PREFIX)


def builtin_folder(spec: str, root: Path | None = None) -> Path:
    """The verified folder of `builtin:<name>`. Raises ModelError on an unknown name, a missing file or
    a digest mismatch."""
    name = spec[len(BUILTIN_PREFIX):]
    if name not in BUILTINS:
        known = ", ".join(BUILTIN_PREFIX + n for n in BUILTINS)
        raise ModelError(f"unknown built-in model '{spec}'; known: {known}")
    folder = (root or ROOT) / name
    for file, expected in BUILTINS[name][1].items():
        path = folder / file
        if not path.is_file():
            raise ModelError(f"{spec} is incomplete: {path} is missing; reinstall dycoke")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise ModelError(f"{spec} is damaged: {file} has SHA-256 {digest[:12]}..., expected "
                             f"{expected[:12]}...; reinstall dycoke")
    return folder


def catalogue(root: Path | None = None) -> list[tuple[str, str, Path]]:
    """(name, family, folder) of every built-in model, for `dycoke models`."""
    return [(name, family, (root or ROOT) / name) for name, (family, _) in BUILTINS.items()]
