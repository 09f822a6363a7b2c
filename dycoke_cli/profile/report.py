"""`dycoke profile`'s report: per-setting medians, ratios to the first setting, agreement, FLOPs.

Pure functions of plain dicts (each run is a Stats.to_dict()), so tests feed them numbers. Every
figure is reported as a median with its min and max, and as a ratio to the first setting.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict

from dycoke_cli.profile.flops import (FLOPS_DENSE_FORMULA, FLOPS_FORMULA, VISION_FLOPS_FORMULA, LMDims, TowerDims,
                                      prefill_flops_for, vision_flops)
from dycoke_cli.settings import Generation

SCHEMA = "dycoke.profile/2"

# ---------------------------------------------------------------------------------------------------
# Aggregation: medians, agreement, ratios (pure functions of plain dicts, so tests feed them numbers)
# ---------------------------------------------------------------------------------------------------

# Stage key in Stats.to_dict() -> label; decode tokens/s is the one where higher is better.
STAGES = [("video_decode_s", "video decode"), ("preprocess_s", "preprocessing"),
          ("vision_encode_s", "vision encode"), ("compress_s", "selection"), ("prefill_s", "prefill"),
          ("time_to_first_token_s", "time to first token"), ("decode_s", "decode"),
          ("decode_tokens_per_s", "decode tokens/s"), ("total_s", "total")]
HIGHER_IS_BETTER = {"decode_tokens_per_s"}
SHARED_STAGES = ("video_decode_s", "preprocess_s", "vision_encode_s")
COUNTS = ("visual_tokens_before", "visual_tokens_after", "visual_tokens_kept", "visual_tokens_kept_from_layer",
          "visual_tokens_kept_pct", "prompt_tokens", "prefill_tokens", "generated_tokens", "finish_reason",
          "kv_entries_full", "kv_entries_full_mean", "kv_entries_attended_mean")


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": list(values)}


def agreement(ids: list[int], reference: list[int], text: str, reference_text: str) -> dict:
    """Exact match of the texts; token overlap = bag-of-tokens F1; the common prefix in tokens
    (greedy decoding diverges for good after the first differing token)."""
    common = sum((Counter(ids) & Counter(reference)).values())
    overlap = 2 * common / (len(ids) + len(reference)) if ids or reference else 1.0
    prefix = 0
    for a, b in zip(ids, reference):
        if a != b:
            break
        prefix += 1
    return {"exact_match": text == reference_text and ids == reference, "token_overlap": overlap,
            "common_prefix_tokens": prefix}


def _ratio(numerator, denominator):
    return numerator / denominator if numerator is not None and denominator else None


def add_ratios(settings: list[dict]) -> None:
    """Every figure against the first setting: speedup (>1 is faster), memory, FLOPs, tokens (this / first)."""
    first = settings[0]
    for s in settings:
        s["ratios"] = {
            "speedup": {key: _speedup(s["timings"][key]["median"], first["timings"][key]["median"], key)
                        for key, _ in STAGES},
            "memory": {key: _ratio(value, first["memory"].get(key)) for key, value in s["memory"].items()},
            "prefill_flops": _ratio(s["prefill_flops"], first["prefill_flops"]),
            "vision_flops": _ratio(s.get("vision_flops"), first.get("vision_flops")),
            "visual_tokens": _ratio(s["visual_tokens_kept"], first["visual_tokens_kept"]),
            "kv_entries_attended": _ratio(s["kv_entries_attended_mean"], first["kv_entries_attended_mean"]),
        }


def _speedup(value: float, first: float, key: str):
    """Above 1 means better than the first setting: first / this for times, this / first for rates."""
    return _ratio(value, first) if key in HIGHER_IS_BETTER else _ratio(first, value)


def summarize(label: str, runs: list[dict], answers: list[tuple[str, list[int]]], dims: LMDims,
              tower: TowerDims | None = None) -> dict:
    """One setting's measured runs (Stats.to_dict() each, in round order) -> its report entry."""
    first = runs[0]
    memory_keys = [k for k in ("peak_gpu_allocated_bytes", "peak_gpu_reserved_bytes", "peak_rss_bytes") if k in first]
    text, ids = answers[0]
    return {
        "label": label,
        "compression": first["compression"],
        "frames": first["frames"],
        "timings": {key: spread([r[key] for r in runs]) for key, _ in STAGES},
        "vision_from_rounds": list(range(1, len(runs) + 1)),
        **{key: first[key] for key in COUNTS},
        "prefill_flops": prefill_flops_for(first, dims),
        "prefill_flops_dense": prefill_flops_for(first, dims, dense=True),
        "vision_flops": None if tower is None else vision_flops(first, tower),
        "memory": {key: max(r[key] for r in runs) for key in memory_keys},
        "answer": text,
        "answer_token_ids": ids,
        "answers_identical_across_repeats": all(a == answers[0] for a in answers),
        "agreement": None,
    }


def add_agreement(settings: list[dict]) -> str | None:
    """Compare each answer with the `none` setting's; returns that setting's label (None if absent)."""
    reference = next((s for s in settings if s["label"] == "none"), None)
    if reference is None:
        return None
    for s in settings:
        s["agreement"] = agreement(s["answer_token_ids"], reference["answer_token_ids"], s["answer"],
                                   reference["answer"])
    return reference["label"]


def build_report(video, question: str, labels: list[str], generation: Generation, dims: LMDims, tower: TowerDims | None,
                 runs: dict[str, list[dict]], answers: dict[str, list[tuple[str, list[int]]]],
                 encodings: list[dict], resettable: bool) -> dict:
    """The JSON document: run facts, the FLOP model, the shared encodings, one entry per setting."""
    entries = [summarize(label, runs[label], answers[label], dims, tower) for label in labels]
    reference = add_agreement(entries)
    add_ratios(entries)
    first = runs[labels[0]][0]
    return {
        "schema": SCHEMA,
        "video": str(video),
        "question": question,
        "model": first["model"], "family": first["family"], "device": first["device"], "dtype": first["dtype"],
        "quantization": first["quantization"], "random_weights": first["random_weights"],
        "frames": first["frames"],
        "repeats": len(runs[labels[0]]), "warmup_rounds": 1,
        "generation": asdict(generation),
        "lm_dims": asdict(dims),
        "tower_dims": None if tower is None else asdict(tower),
        "flops_formula": FLOPS_FORMULA, "flops_dense_formula": FLOPS_DENSE_FORMULA,
        "baseline": labels[0],
        "agreement_reference": reference,
        "encodings": encodings,
        "settings": entries,
        "notes": _notes(first, reference, resettable),
    }


def _notes(first: dict, reference: str | None, resettable: bool) -> list[str]:
    notes = [
        ("video decode, preprocessing and vision encode run once per round for every distinct set of frames and "
         "are shared by the settings that encode those frames (a method that encodes fewer frames, such as "
         "uniform, encodes its own): repeat i of each setting carries round i's measurement of its encoding "
         "(see encodings, which also lists each encoding's frame timestamps)"),
        ("time to first token = preprocessing + vision encode + selection + prefill (frames in hand to the "
         "first token, as papers and vLLM count it); prefill is the language model alone"),
        "total = video stages + selection + prefill + decode of that setting's run",
        (f"prefill_flops = {FLOPS_FORMULA} (DyCoke/FastV convention: n prefill tokens, d hidden, m FFN, "
         f"L layers); prefill_flops_dense = {FLOPS_DENSE_FORMULA} (Qwen2's actual matmuls, GQA and SwiGLU)"),
        (f"vision_flops = {VISION_FLOPS_FORMULA} (the tower's d and m, n patches of a frame; after a selection "
         "inside the tower, its later layers count each frame's kept patches)"),
        ("memory: peak over the repeats of each setting's own run (TTM, prefill, decode), reset before it; "
         "a round's vision-encode peak is under encodings"),
        ("ratios: speedup = first / this for times, this / first for decode tokens/s; memory, FLOPs and "
         "token ratios = this / first"),
    ]
    if not first["device"].startswith("cuda"):
        notes.append("CPU run: memory is the process's peak RSS, model weights included")
    if not resettable:
        notes.append("peak RSS could not be reset between settings on this system: it is the peak so far")
    if reference is None:
        notes.append("no `none` setting: answers were not compared")
    if first["random_weights"]:
        notes.append("random weights: answers are meaningless; agreement with `none` measures how "
                     "faithfully a setting reproduces the uncompressed model's output, not accuracy")
    return notes
