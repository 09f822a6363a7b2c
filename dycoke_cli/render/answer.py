"""How one answer's stats look on stderr: short label/value rows that fit 80 columns.

Every figure comes from `Stats.to_dict()`, the same keys `--json` prints, so the table and the JSON
never disagree. Method counters are printed generically: a new method's counters show up unchanged.
"""

from __future__ import annotations

from dycoke_cli import render
from dycoke_cli.render import format_bytes, format_seconds


def compression_label(c: dict) -> str:
    """`method k=0.7 p=0.7 ...` with the effective parameters and the budget (encoder_layer only where
    the method acts inside the tower, the one place it means anything)."""
    params = " ".join(f"{k}={v}" for k, v in c["params"].items()
                      if not (k == "encoder_layer" and c["params"].get("stage") == "prefill"))
    budget = f" budget={c['budget']:g}" if c.get("budget") is not None else ""
    return f"{c['method']} {params}{budget}".strip()


def stats_rows(d: dict, verbose: bool = False) -> list[tuple[str, str]]:
    """The rows of one answer's table, from a Stats.to_dict()."""
    rows = [("model", f"{d['model']} ({d['family']})" + (", random weights" if d["random_weights"] else "")),
            ("run", f"{d['device']} {d['dtype']}, quant {d['quantization']}"
                    + (f", loaded in {format_seconds(d['load_s'])}" if d["load_s"] else ""))]
    frames = f"{d['frames']}" + (f" in groups of {d['frames_per_group']}" if d["frames_per_group"] > 1 else "")
    rows.append(("frames", frames))
    if verbose:
        rows.append(("frame times", ", ".join(f"{t:.2f}" for t in d["frame_timestamps"]) + " s"))
    c = d["compression"]
    rows.append(("compression", compression_label(c)))
    rows.append(("visual tokens", visual_tokens(d)))
    if c["counters"]:
        rows.append(("counters", ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v:.3g}"
                                           for k, v in c["counters"].items())))
    if d["decode_steps"]:
        rows.append(("KV per step", f"{d['kv_entries_attended_mean']:,.1f} attended of {d['kv_entries_full_mean']:,.1f} "
                                    f"cached (means over {d['decode_steps']:,} decode steps)"))
    reused = f" ({d['prefix_reused_tokens']:,} reused from cache)" if d["prefix_reused_tokens"] else ""
    rows.append(("prompt", f"{d['prompt_tokens']:,} tokens{reused}"))
    if d["prefix_reused_tokens"]:
        rows.append(("reuse", f"~{format_seconds(d['prefill_saved_s'])} of prefill saved (estimated at the last "
                              "full prefill's rate)"))
    if d["video_reused"]:
        rows.append(("video", "encoded for an earlier answer"))
    else:
        rows.append(("video", f"decode {_short(d['video_decode_s'])}, preprocess {_short(d['preprocess_s'])}, "
                              f"vision {_short(d['vision_encode_s'])}, select {_short(d['compress_s'])}"))
    rows.append(("prefill", f"{format_seconds(d['prefill_s'])}, {d['prefill_tokens_per_s']:,.0f} tokens/s"))
    rows.append(("first token", format_seconds(d["time_to_first_token_s"])
                 + ("" if d["video_reused"] else " (frames in hand to first token)")))
    rows.append(("decode", decode_row(d)))
    rows.append(("finish", "stop (the answer ended)" if d["finish_reason"] == "stop" else
                 f"{d['finish_reason']} (cut at --max-new-tokens {d['generated_tokens']:,})"))
    rows.append(("total", format_seconds(d["total_s"])))
    if "peak_gpu_allocated_bytes" in d:
        rows.append(("peak memory", f"{format_bytes(d['peak_gpu_allocated_bytes'])} GPU allocated, "
                                    f"{format_bytes(d['peak_gpu_reserved_bytes'])} reserved"))
    else:
        rows.append(("peak memory", f"{format_bytes(d['peak_rss_bytes'])} RSS"))
    return rows


def visual_tokens(d: dict) -> str:
    """Before -> after the selection, and, where a method drops more inside the language model
    (FastV after layer K), what the layers from there on see: the share kept is of those."""
    text = f"{d['visual_tokens_before']:,} -> {d['visual_tokens_after']:,}"
    if d["visual_tokens_kept_from_layer"]:
        text += f" at input, {d['visual_tokens_kept']:,} from layer {d['visual_tokens_kept_from_layer']}"
    return f"{text} ({d['visual_tokens_kept_pct']:.1f}% kept)"


def decode_row(d: dict) -> str:
    """Tokens, time, and the steady rate (the first decode step apart: it carries one-off costs)."""
    text = f"{d['generated_tokens']:,} tokens in {format_seconds(d['decode_s'])}"
    if d["decode_steps"] > 1:
        return (f"{text}, {d['decode_tokens_per_s']:.1f} tokens/s after the first step "
                f"({format_seconds(d['first_decode_step_s'])})")
    return f"{text}, {d['decode_tokens_per_s']:.1f} tokens/s" if d["decode_steps"] else text


def _short(s: float) -> str:
    """Seconds in at most five characters plus unit, for rows that list several stages."""
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


def print_stats(stats, verbose: bool = False) -> None:
    for warning in stats.video.warnings:
        render.notice(warning)
    render.lines(stats_rows(stats.to_dict(), verbose), title="dycoke stats")
