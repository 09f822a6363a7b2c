"""An encoded video as a cache entry (tensors + JSON) and back, its shapes checked on the way in.

What is stored is every feature level the language model reads, in the dtype the tower produced:
`tokens` (F, T, D), one `extra.<name>` (F, T, D') per extra level (Qwen3-VL's deepstack), `trailing`
(K, D) where the family has tokens after the last frame (LLaVA-OneVision's newline), `present` (F*T,)
bool where a selection inside the vision tower kept only some cells (the others' rows are zeros and
must never reach the language model); and as JSON the grid, times, group, meta and patches kept of
the features, and the figures of the encode that made them (frames decoded, their timestamps, decode
warnings, decode / preprocess / vision seconds, the tower's layer and patch counts).

A stored entry that passed its checksum can still be wrong for this request (written by a buggy or
foreign producer): `features_from_entry` checks every shape against what the plan and the model say
it must be, and refuses with `Unusable` rather than hand the language model tokens of another shape.
"""

from __future__ import annotations

import math

import torch

from dycoke_cli.cache.store import Unusable

TOKENS, TRAILING, PRESENT, EXTRA = "tokens", "trailing", "present", "extra."
ENCODE_FIGURES = ("video_decode_s", "preprocess_s", "vision_encode_s")


def entry_from_features(features, stats) -> tuple[dict, dict]:
    """(tensors, info) of a models.VideoFeatures and the stats.VideoStats of the encode that made it."""
    tensors = {TOKENS: features.tokens, **{EXTRA + name: x for name, x in features.extras.items()}}
    if features.trailing is not None:
        tensors[TRAILING] = features.trailing
    if features.present is not None:
        tensors[PRESENT] = features.present
    info = {
        "features": {"grid": list(features.grid), "times": list(features.times), "group": features.group,
                     "meta": features.meta, "extras": sorted(features.extras), "present": features.present is not None,
                     "patches_kept": list(features.patches_kept)},
        "encode": {"frames": stats.frames, "frame_timestamps": list(stats.frame_timestamps),
                   "warnings": list(stats.warnings), **{key: getattr(stats, key) for key in ENCODE_FIGURES},
                   "encoder_layer": stats.encoder_layer, "tower_patches": stats.tower_patches,
                   "tower_patches_kept": list(stats.tower_patches_kept)},
    }
    return tensors, info


def _tuples(value):
    """JSON arrays back to the tuples the adapters put in meta."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def features_from_entry(tensors: dict, info: dict, expected, hidden: int, trailing: int):
    """(models.VideoFeatures, the encode's figures) of an entry, after checking it against `expected`
    (the compress.VisualLayout the plan's frames must have), the language model's width `hidden` and
    the family's count of `trailing` tokens. Unusable("wrong shapes: ...") otherwise."""
    from dycoke_cli.models.base import VideoFeatures

    try:
        shape, encode = info["features"], info["encode"]
        grid, times, group = tuple(shape["grid"]), tuple(shape["times"]), shape["group"]
        extras = {name: tensors[EXTRA + name] for name in shape["extras"]}
        tokens = tensors[TOKENS]
        meta = _tuples(shape["meta"])
        present = tensors[PRESENT] if shape["present"] else None
        patches_kept = tuple(int(n) for n in shape["patches_kept"])
        frames = encode["frames"]
        figures = {key: float(encode[key]) for key in ENCODE_FIGURES}
        timestamps = [float(t) for t in encode["frame_timestamps"]]
        warnings = [str(w) for w in encode["warnings"]]
        tower = {"encoder_layer": None if encode["encoder_layer"] is None else int(encode["encoder_layer"]),
                 "tower_patches": int(encode["tower_patches"]),
                 "tower_patches_kept": [int(n) for n in encode["tower_patches_kept"]]}
    except (KeyError, TypeError, ValueError) as exc:
        raise Unusable(f"wrong shapes: missing or malformed {exc}") from None
    problem = _shape_problem(tensors, tokens, extras, present, grid, times, group, expected, hidden, trailing)
    if problem is None and not (isinstance(meta, dict) and frames == len(timestamps)
                                and tokens.shape[0] == math.ceil(frames / group)):
        problem = f"{frames} frames for {tokens.shape[0]} token grids"
    if problem is not None:
        raise Unusable(f"wrong shapes: {problem}")
    features = VideoFeatures(tokens=tokens, grid=grid, times=times, group=group, extras=extras,
                             trailing=tensors.get(TRAILING), meta=meta, present=present, patches_kept=patches_kept)
    return features, {"frames": frames, "frame_timestamps": timestamps, "warnings": warnings, **figures, **tower}


def _shape_problem(tensors, tokens, extras, present, grid, times, group, expected, hidden, trailing) -> str | None:
    """What is wrong with the tensors' shapes, in words, or None."""
    known = ({TOKENS} | {EXTRA + name for name in extras} | ({TRAILING} if trailing else set())
             | ({PRESENT} if present is not None else set()))
    if set(tensors) != known:
        return f"tensors {sorted(tensors)}, expected {sorted(known)}"
    if tokens.dim() != 3:
        return f"tokens of {tokens.dim()} dimensions"
    count, per_frame, width = tokens.shape
    if grid != tuple(expected.grid) or group != expected.group or per_frame != grid[0] * grid[1]:
        return f"grid {grid} x{group} with {per_frame} tokens, expected {tuple(expected.grid)} x{expected.group}"
    if not 1 <= count <= expected.frames or len(times) != count:
        return f"{count} token grids for {len(times)} times, at most {expected.frames} expected"
    if width != hidden:
        return f"width {width}, the language model's is {hidden}"
    for name, x in extras.items():
        if x.dim() != 3 or tuple(x.shape[:2]) != (count, per_frame) or x.dtype != tokens.dtype:
            return f"extra level '{name}' {tuple(x.shape)} for tokens {tuple(tokens.shape)}"
    if trailing and (tuple(tensors[TRAILING].shape) != (trailing, width) or tensors[TRAILING].dtype != tokens.dtype):
        return f"trailing tokens {tuple(tensors[TRAILING].shape)}, expected ({trailing}, {width})"
    if present is not None and (tuple(present.shape) != (count * per_frame,) or present.dtype != torch.bool):
        return f"present cells {tuple(present.shape)} {present.dtype}, expected ({count * per_frame},) bool"
    return None
