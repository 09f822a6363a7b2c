"""`dycoke profile`: one video and question under several compression settings, measured side by side.

Why it is shaped this way:
- DyCoke leaves the vision tower alone, so the video is decoded and encoded once per *round* and the
  encoding is shared by every setting of that round. A sweep then costs little more than its
  language-model work, yet each setting's decode/preprocess/vision figures are still measured ones:
  repeat i of every setting carries the times of round i's encoding (the report says so).
- Rounds interleave the settings (round 1: A, B, C; round 2: A, B, C; ...), so slow drift of the
  machine (thermals, other load) spreads over all settings instead of biasing the last one.
- Round 0 is a warm-up (one-off allocations, kernel choice, lazy imports) and is not reported.
- Every figure is reported as a median with its min and max, and as a ratio to the first setting.

The settings grammar and the FLOP model live here too; nothing at module level imports torch, so the
CLI can reject a bad `--settings` before loading anything heavy.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from dycoke_cli.errors import SettingsError
from dycoke_cli.settings import NO_COMPRESSION, Compression, Generation

SCHEMA = "dycoke.profile/1"

# ---------------------------------------------------------------------------------------------------
# Settings grammar
# ---------------------------------------------------------------------------------------------------

GRAMMAR = """\
SETTINGS := SETTING ("," SETTING)*          e.g. none,dycoke,dycoke:k=0.5,dycoke:k=0.9:p=0.8,ttm:k=0.7
SETTING  := BASE (":" KEY "=" VALUE)*
BASE     := none     no compression (takes no keys)
          | dycoke   both stages, the defaults of `ask` (k=0.7, variant=clean, p=0.7, layer=3, gate=reuse)
          | ttm      temporal token merging only (DP off); keys k, variant
          | kv       decode-time KV pruning only (TTM off); keys p, layer, gate
KEY      := k | ttm-k         TTM pruning rate K, in [0, 1)
          | variant | ttm-variant   clean | reference
          | p | kv-p          DP pruning rate P, in [0, 1)
          | layer | kv-layer  DP layer L, >= 1 and below the model's layer count
          | gate | kv-gate    reuse | released
SWEEP    := [BASE ":"] KEY "=" VALUE ("," VALUE)*   e.g. ttm-k=0.3,0.5,0.7,0.9 (BASE defaults to dycoke)
Without --settings the settings are none,dycoke; with only --sweep they are none then the sweep.
The first setting is the baseline of every ratio; answers are compared with the `none` setting's."""

# key as typed -> (Compression field, parser)
_KEYS: dict[str, tuple[str, type]] = {}
for _short, _long, _field, _kind in [("k", "ttm-k", "ttm_k", float), ("variant", "ttm-variant", "ttm_variant", str),
                                     ("p", "kv-p", "kv_p", float), ("layer", "kv-layer", "kv_layer", int),
                                     ("gate", "kv-gate", "kv_gate", str)]:
    _KEYS[_short] = _KEYS[_long] = (_field, _kind)

# base -> (starting Compression, fields its keys may set)
_BASES: dict[str, tuple[Compression, tuple[str, ...]]] = {
    "none": (NO_COMPRESSION, ()),
    "dycoke": (Compression(), ("ttm_k", "ttm_variant", "kv_p", "kv_layer", "kv_gate")),
    "ttm": (Compression(kv_p=0.0), ("ttm_k", "ttm_variant")),
    "kv": (Compression(ttm_k=0.0), ("kv_p", "kv_layer", "kv_gate")),
}


@dataclass(frozen=True)
class Setting:
    label: str  # as the user wrote it (whitespace removed); names the setting in the report
    compression: Compression


def _value(key: str, text: str, where: str):
    if key not in _KEYS:
        raise SettingsError(f"{where}: unknown key '{key}'; keys are {', '.join(_KEYS)}")
    field, kind = _KEYS[key]
    try:
        return field, kind(text)
    except ValueError:
        raise SettingsError(f"{where}: {key} needs {'a number' if kind is float else 'an integer'}, "
                            f"got '{text}'") from None


def _base(name: str, where: str) -> tuple[Compression, tuple[str, ...]]:
    if name not in _BASES:
        raise SettingsError(f"{where}: unknown setting '{name}'; choose {', '.join(_BASES)}")
    return _BASES[name]


def parse_setting(text: str, flag: str = "--settings") -> Setting:
    """One SETTING, e.g. `dycoke:k=0.9:p=0.8`; `flag` names the option in error messages."""
    label = "".join(text.split())
    where = f"{flag} '{label}'"
    if not label:
        raise SettingsError(f"{flag}: empty setting (two commas in a row, or a trailing comma)")
    name, *pairs = label.split(":")
    compression, allowed = _base(name, where)
    seen: set[str] = set()
    for pair in pairs:
        key, eq, text_value = pair.partition("=")
        if not eq or not key or not text_value:
            raise SettingsError(f"{where}: expected KEY=VALUE after ':', got '{pair}'")
        field, value = _value(key, text_value, where)
        if field not in allowed:
            raise SettingsError(f"{where}: '{key}' does not apply to '{name}'"
                                + (" (it takes no keys)" if not allowed else ""))
        if field in seen:
            raise SettingsError(f"{where}: '{key}' is given twice")
        seen.add(field)
        compression = replace(compression, **{field: value})
    try:
        compression.validate()
    except SettingsError as exc:
        raise SettingsError(f"{where}: {exc}") from None
    return Setting(label, compression)


def parse_settings(text: str) -> list[Setting]:
    return [parse_setting(part) for part in text.split(",")]


def parse_sweep(text: str) -> list[Setting]:
    """`[BASE:]KEY=V1,V2,...` -> one setting per value, labelled `BASE:KEY=V`."""
    spec = "".join(text.split())
    head, eq, values = spec.partition("=")
    name, colon, key = head.rpartition(":")
    if not eq or not key or not values or (colon and not name):
        raise SettingsError(f"--sweep '{spec}': expected [BASE:]KEY=V1,V2,... e.g. ttm-k=0.3,0.5,0.7,0.9")
    name = name or "dycoke"
    if any(not v for v in values.split(",")):
        raise SettingsError(f"--sweep '{spec}': empty value in the list")
    return [parse_setting(f"{name}:{key}={v}", "--sweep") for v in values.split(",")]


def plan_settings(settings: str | None, sweep: str | None) -> list[Setting]:
    """The settings to run, in order: --settings (default none,dycoke; just none with a sweep), then the sweep."""
    base = settings if settings is not None else ("none" if sweep else "none,dycoke")
    plan = parse_settings(base) + (parse_sweep(sweep) if sweep else [])
    labels = Counter(s.label for s in plan)
    twice = [label for label, count in labels.items() if count > 1]
    if twice:
        raise SettingsError(f"setting '{twice[0]}' is listed twice")
    return plan


# ---------------------------------------------------------------------------------------------------
# Theoretical prefill FLOPs
# ---------------------------------------------------------------------------------------------------

FLOPS_FORMULA = "L * (4*n*d^2 + 2*n^2*d + 2*n*d*m)"
FLOPS_DENSE_FORMULA = "L * 2 * (2*n*d^2 + 2*n*d*d_kv + 2*n^2*d + 3*n*d*m)"


@dataclass(frozen=True)
class LMDims:
    """The language model's dimensions the FLOP model needs, read from its own config."""

    hidden: int  # d
    ffn: int  # m
    layers: int  # L
    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def from_config(cls, text_config) -> LMDims:
        heads = text_config.num_attention_heads
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
        return cls(hidden=text_config.hidden_size, ffn=text_config.intermediate_size,
                   layers=text_config.num_hidden_layers, heads=heads,
                   kv_heads=getattr(text_config, "num_key_value_heads", None) or heads, head_dim=head_dim)


def prefill_flops(n: int, dims: LMDims) -> int:
    """Prefill cost of n tokens in the convention of DyCoke and FastV: L * (4nd^2 + 2n^2d + 2ndm).

    This is the figure the paper's ~41 TFLOPs (LLaVA-OV-7B, 32 frames, full) and ~18 (K = 0.7) come
    from; with n = 32*196 + 1 + 100 it gives 41.55e12, and 17.92e12 for n = 2960 + 1 + 100. It counts
    multiply-accumulates of Q, K, V, O as four d x d projections (GQA's narrower K/V ignored), QK^T
    and AV over the full n x n (no causal halving), and a two-matrix FFN: one 2ndm term, *not* three
    SwiGLU matrices (reading it as 3 x 2ndm would give ~90 TFLOPs, far from the published 41). The
    lm_head is left out (prefill computes logits for the last position only). Use it for ratios
    between settings and for comparison with published figures; `prefill_flops_dense` is the count
    of the arithmetic Qwen2 actually does.
    """
    d, m = dims.hidden, dims.ffn
    return dims.layers * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m)


def prefill_flops_dense(n: int, dims: LMDims) -> int:
    """Floating-point operations of Qwen2's prefill matmuls (2 per multiply-add): L * 2 * (2nd^2 for
    Q and O + 2n*d*d_kv for the grouped K and V + 2n^2d for QK^T and AV + 3ndm for SwiGLU's gate, up
    and down). 99.5e12 for the 7B full-video case above; about 2.4x the paper convention."""
    d, m, d_kv = dims.hidden, dims.ffn, dims.kv_heads * dims.head_dim
    return dims.layers * 2 * (2 * n * d * d + 2 * n * d * d_kv + 2 * n * n * d + 3 * n * d * m)


# ---------------------------------------------------------------------------------------------------
# Aggregation: medians, agreement, ratios (pure functions of plain dicts, so tests feed them numbers)
# ---------------------------------------------------------------------------------------------------

# Stage key in Stats.to_dict() -> label; decode tokens/s is the one where higher is better.
STAGES = [("video_decode_s", "video decode"), ("preprocess_s", "preprocessing"),
          ("vision_encode_s", "vision encode"), ("ttm_s", "TTM"), ("prefill_s", "prefill (TTFT)"),
          ("decode_s", "decode"), ("decode_tokens_per_s", "decode tokens/s"), ("total_s", "total")]
HIGHER_IS_BETTER = {"decode_tokens_per_s"}
SHARED_STAGES = ("video_decode_s", "preprocess_s", "vision_encode_s")
COUNTS = ("visual_tokens_before", "visual_tokens_after", "visual_tokens_kept_pct", "prompt_tokens",
          "prefill_tokens", "generated_tokens", "kv_entries_full", "kv_entries_attended_mean")


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
            "visual_tokens": _ratio(s["visual_tokens_after"], first["visual_tokens_after"]),
            "kv_entries_attended": _ratio(s["kv_entries_attended_mean"], first["kv_entries_attended_mean"]),
        }


def _speedup(value: float, first: float, key: str):
    """Above 1 means better than the first setting: first / this for times, this / first for rates."""
    return _ratio(value, first) if key in HIGHER_IS_BETTER else _ratio(first, value)


def summarize(setting: Setting, runs: list[dict], answers: list[tuple[str, list[int]]], dims: LMDims) -> dict:
    """One setting's measured runs (Stats.to_dict() each, in round order) -> its report entry."""
    first = runs[0]
    memory_keys = [k for k in ("peak_gpu_allocated_bytes", "peak_gpu_reserved_bytes", "peak_rss_bytes") if k in first]
    n = first["prefill_tokens"]
    text, ids = answers[0]
    return {
        "label": setting.label,
        "compression": asdict(setting.compression),
        "timings": {key: spread([r[key] for r in runs]) for key, _ in STAGES},
        "vision_from_rounds": list(range(1, len(runs) + 1)),
        **{key: first[key] for key in COUNTS},
        "prefill_flops": prefill_flops(n, dims),
        "prefill_flops_dense": prefill_flops_dense(n, dims),
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


# ---------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------


def _answer(lm, encoded, setting: Setting, question: str, generation: Generation):
    """One setting on one encoding: TTM, prefill, decode; the Session (and its cache) dies here."""
    from dycoke_cli.engine import Session

    return Session(lm, encoded, setting.compression, reuse_prefix=False).ask(question, generation)


def run_profile(lm, video, sampling, question: str, settings: list[Setting], generation: Generation,
                repeats: int, first_encoding=None, on_progress: Callable[[str], None] = lambda _: None) -> dict:
    """Warm-up round, then `repeats` measured rounds; each round encodes the video once and runs
    every setting on that encoding. `first_encoding`, if given, serves the warm-up round (the CLI
    decodes before loading the model, to report a bad video early)."""
    from dycoke_cli.engine import encode_video
    from dycoke_cli.stats import peak_memory, start_peak_window

    layers = lm.model.config.get_text_config().num_hidden_layers
    for s in settings:  # before minutes of work, not when the warm-up reaches the setting
        try:
            s.compression.validate(layers)
        except SettingsError as exc:
            raise SettingsError(f"--settings '{s.label}': {exc}") from None
    runs: dict[str, list[dict]] = {s.label: [] for s in settings}
    answers: dict[str, list[tuple[str, list[int]]]] = {s.label: [] for s in settings}
    encodings, resettable = [], True
    for round_ in range(repeats + 1):
        name = "warm-up" if round_ == 0 else f"round {round_}/{repeats}"
        on_progress(f"{name}: encoding the video")
        resettable &= start_peak_window(lm.device)
        encoded = first_encoding if round_ == 0 and first_encoding is not None else encode_video(lm, video, sampling)
        if round_:
            encodings.append({"round": round_, **{k: getattr(encoded.stats, k) for k in SHARED_STAGES},
                              "memory": peak_memory(lm.device)})
        for setting in settings:
            on_progress(f"{name}: {setting.label}")
            resettable &= start_peak_window(lm.device)
            answer = _answer(lm, encoded, setting, question, generation)
            if round_:
                runs[setting.label].append(answer.stats.to_dict())
                answers[setting.label].append((answer.text, answer.token_ids))
    dims = LMDims.from_config(lm.model.config.get_text_config())
    return build_report(video, question, settings, generation, dims, runs, answers, encodings, resettable)


def build_report(video, question: str, settings: list[Setting], generation: Generation, dims: LMDims,
                 runs: dict[str, list[dict]], answers: dict[str, list[tuple[str, list[int]]]],
                 encodings: list[dict], resettable: bool) -> dict:
    """The JSON document: run facts, the FLOP model, the shared encodings, one entry per setting."""
    entries = [summarize(s, runs[s.label], answers[s.label], dims) for s in settings]
    reference = add_agreement(entries)
    add_ratios(entries)
    first = runs[settings[0].label][0]
    return {
        "schema": SCHEMA,
        "video": str(video),
        "question": question,
        "model": first["model"], "family": first["family"], "device": first["device"], "dtype": first["dtype"],
        "quantization": first["quantization"], "random_weights": first["random_weights"],
        "frames": first["frames"],
        "repeats": len(encodings), "warmup_rounds": 1,
        "generation": asdict(generation),
        "lm_dims": asdict(dims),
        "flops_formula": FLOPS_FORMULA, "flops_dense_formula": FLOPS_DENSE_FORMULA,
        "baseline": settings[0].label,
        "agreement_reference": reference,
        "encodings": encodings,
        "settings": entries,
        "notes": _notes(first, reference, resettable),
    }


def _notes(first: dict, reference: str | None, resettable: bool) -> list[str]:
    notes = [
        ("video decode, preprocessing and vision encode run once per round and are shared by every setting "
         "of that round: repeat i of each setting carries round i's measurement (see encodings), so those "
         "stages are identical across settings by construction"),
        "total = shared video stages + TTM + prefill + decode of that setting's run",
        (f"prefill_flops = {FLOPS_FORMULA} (DyCoke/FastV convention: n prefill tokens, d hidden, m FFN, "
         f"L layers); prefill_flops_dense = {FLOPS_DENSE_FORMULA} (Qwen2's actual matmuls, GQA and SwiGLU)"),
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
