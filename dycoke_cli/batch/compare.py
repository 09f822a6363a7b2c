"""The comparison a multi-setting `dycoke run` closes with, computed from the answers files alone.

Like the summary, every figure comes from the lines on disk, so a resumed run, or a rerun with
nothing left to answer, reports the same comparison. Per setting: its summary (records, accuracy
overall and per task with 95% Wilson intervals, latency, visual tokens, peak memory), the mean visual
tokens kept where the method keeps them (FastV: after its layer K, as `profile` counts them;
answers files written before lines carried it: the tokens of the prefill), the mean time to first token and prefill per answer, the decode rate over all answers, and the agreement with the first
setting: the share of the records both answered whose answers are the same text.

Time to first token and prefill are means over the answers: the first answer about a video carries
the video's preprocessing and vision encode (shared by the settings that encode the same frames, each
reporting the measured encode), its follow-ups only their own prefill over the cached prefix.
"""

from __future__ import annotations

from pathlib import Path

from dycoke_cli.batch.answers import id_key, is_failure
from dycoke_cli.batch.summary import mean, summarize, wilson

SCHEMA = "dycoke.compare/1"


def compare(source: str, specs: list, outputs: list[Path], lines: list[list[dict]]) -> dict:
    """The report of settings `specs` (compress.spec.CompressionSpec, in order), whose answers files
    `outputs` hold `lines` (each setting's lines for this input)."""
    reference = {id_key(line["id"]): line["answer"] for line in lines[0] if not is_failure(line)}
    settings = [_setting(spec, output, own, reference) for spec, output, own in zip(specs, outputs, lines)]
    return {
        "schema": SCHEMA,
        "questions": source,
        "baseline": specs[0].label,
        "settings": settings,
        "notes": [
            "accuracy: correct of the scored records answered, with the 95% Wilson score interval",
            "agreement: of the records both this setting and the first answered, the share answered with the "
            "same text (95% Wilson interval)",
            "time to first token and prefill: mean per answer; the first answer about a video also carries its "
            "preprocessing and vision encode, shared by the settings that encode the same frames",
            "decode tokens/s: tokens after the first over decode seconds, all answers together",
        ],
    }


def _setting(spec, output: Path, lines: list[dict], reference: dict[str, str]) -> dict:
    ok = [line for line in lines if not is_failure(line)]
    summary = summarize(lines, output)
    both = [line for line in ok if id_key(line["id"]) in reference]
    same = sum(1 for line in both if line["answer"] == reference[id_key(line["id"])])
    failures = [line["error"] for line in lines if is_failure(line)]
    steps = sum(max(0, int(line.get("generated_tokens", 0)) - 1) for line in ok)
    decode = sum(float(line.get("decode_s", 0.0)) for line in ok)
    kept = mean(ok, "visual_tokens_kept")  # where they are kept: after layer K for FastV
    return {
        "label": spec.label,
        "method": spec.method,
        **summary,
        "visual_tokens_kept": summary["visual_tokens_after"] if kept is None else kept,
        "time_to_first_token_s": mean(ok, "time_to_first_token_s"),
        "prefill_s": mean(ok, "prefill_s"),
        "decode_tokens_per_s": steps / decode if steps and decode > 0 else None,
        "agreement": {"compared": len(both), "same": same, "share": same / len(both) if both else None,
                      "interval_95": wilson(same, len(both))},
        # A setting no record could run under (a budget it cannot reach): why, for the table.
        "error": failures[0].split(": ", 1)[-1] if failures and not ok else None,
    }

