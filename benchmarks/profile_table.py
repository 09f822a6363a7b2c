"""A `dycoke profile` JSON report as the markdown table benchmarks/RESULTS.md shows.

    python benchmarks/profile_table.py report.json

One row per setting, in the report's order: the visual tokens that reach the language model, prefill
(the language model alone), time to first token (frames in hand to the first token, vision encoder
included), the theoretical prefill FLOPs, decode tokens/s, and each figure's ratio to the first
setting (speed-up for times: first / this; share for tokens and FLOPs: this / first). Medians over
the measured repeats.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def table(report: dict) -> str:
    rows = ["| setting | visual tokens | prefill (s) | time to first token (s) | prefill TFLOPs | decode tok/s |",
            "|---|---:|---:|---:|---:|---:|"]
    for s in report["settings"]:
        t, r = s["timings"], s["ratios"]
        tokens = f"{s['visual_tokens_after']:,} ({r['visual_tokens']:.0%})"
        if s["compression"]["method"] == "fastv":  # prunes inside the model: report what survives layer K
            kept = s["compression"].get("counters", {}).get("fastv_visual_kept")
            tokens = f"{s['visual_tokens_after']:,} -> {kept:,} after layer K" if kept is not None else tokens
        rows.append(
            f"| {s['label']} | {tokens} "
            f"| {t['prefill_s']['median']:.2f} ({r['speedup']['prefill_s']:.2f}x) "
            f"| {t['time_to_first_token_s']['median']:.2f} ({r['speedup']['time_to_first_token_s']:.2f}x) "
            f"| {s['prefill_flops'] / 1e12:.2f} ({r['prefill_flops']:.0%}) "
            f"| {t['decode_tokens_per_s']['median']:.1f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    report = json.loads(parser.parse_args().report.read_text())
    print(f"{report['model']} ({report['family']}), {report['frames']} frames, {report['device']} {report['dtype']}, "
          f"quant {report['quantization']}, {report['generation']['max_new_tokens']} new tokens, "
          f"{report['repeats']} measured round(s) after {report['warmup_rounds']} warm-up\n")
    print(table(report))


if __name__ == "__main__":
    main()
