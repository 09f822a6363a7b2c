"""`dycoke run` (a JSONL file of questions, resumable, shardable) and `dycoke merge` (shard files)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dycoke_cli.commands import options as o
from dycoke_cli.commands.common import errors_to_exit, load
from dycoke_cli.models.source import DEFAULT_MODEL

BATCH = "Batch"

Output = Annotated[Optional[Path], typer.Option(
    "--output", "-o", envvar="DYCOKE_OUTPUT", rich_help_panel=BATCH, show_default=False,
    help="Answers file (JSONL), appended to and resumed; default <input>.answers.jsonl.",
)]
Shard = Annotated[Optional[str], typer.Option(
    "--shard", envvar="DYCOKE_SHARD", rich_help_panel=BATCH, show_default=False,
    help="i/N: run the i-th of N parts of the videos (0-based) into <output>.shard-i-of-N.jsonl.",
)]
RetryFailed = Annotated[bool, typer.Option(
    "--retry-failed", envvar="DYCOKE_RETRY_FAILED", rich_help_panel=BATCH,
    help="Run again the records whose earlier attempt failed (answered ones are always skipped).",
)]
SummaryJson = Annotated[bool, typer.Option(
    "--json", rich_help_panel=o.OUTPUT, help="Print the summary as one JSON object on stdout.",
)]


def run(
    questions: Annotated[str, typer.Argument(
        help="JSONL file, one question a line (video, question; optional id, options, answer, task, frames, "
             "max_new_tokens); - reads stdin.", show_default=False)],
    output: Output = None, shard: Shard = None, retry_failed: RetryFailed = False,
    model: o.Model = DEFAULT_MODEL, quant: o.Quant = "auto", device: o.Device = "auto", dtype: o.Dtype = "auto",
    offline: o.Offline = False, trust_remote_code: o.TrustRemoteCode = False,
    frames: o.Frames = 32, fps: o.Fps = None, max_frames: o.MaxFrames = None, start: o.Start = None,
    end: o.End = None,
    ttm_k: o.TtmK = o.DEFAULTS.ttm_k, ttm_variant: o.TtmVariant = o.DEFAULTS.ttm_variant,
    kv_p: o.KvP = o.DEFAULTS.kv_p, kv_layer: o.KvLayer = o.DEFAULTS.kv_layer,
    kv_gate: o.KvGate = o.DEFAULTS.kv_gate, no_compress: o.NoCompress = False,
    max_new_tokens: o.MaxNewTokens = o.DEFAULT_GENERATION.max_new_tokens,
    temperature: o.Temperature = 0.0, top_p: o.TopP = 1.0, seed: o.Seed = 0,
    json_out: SummaryJson = False, debug: o.Debug = False,
) -> None:
    """Answer every question of a JSONL file into an answers file (resumable), then summarize.

    Each video is encoded once for all its questions. Exit 1 if any record failed."""

    with errors_to_exit(debug):
        from dycoke_cli.batch import job as batch
        from dycoke_cli.render.batch import BatchProgress, print_summary

        part = batch.parse_shard(shard)
        job = batch.Job(
            source=questions, output=batch.default_output(questions, output, part),
            sampling=o.sampling(frames, fps, max_frames, start, end),
            compression=o.compression(no_compress, ttm_k, ttm_variant, kv_p, kv_layer, kv_gate),
            generation=o.generation(max_new_tokens, temperature, top_p, seed),
            shard=part, retry_failed=retry_failed, debug=debug,
        )
        processes = batch.Processes()
        label = "answering" if processes.count == 1 else f"rank {processes.index}/{processes.count}"
        summary = batch.run_job(
            job, processes, lambda: load(model, processes.device(device), dtype, quant, offline, trust_remote_code),
            BatchProgress(enabled=processes.index == 0, label=label),
        )
        if summary is None:  # another rank: rank 0 reports for the whole job
            return
        print_summary(summary, json_out)
        if summary["failed"]:
            raise typer.Exit(1)


def merge(
    files: Annotated[list[Path], typer.Argument(help="Answer files to combine (e.g. the --shard outputs).",
                                                show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", rich_help_panel=BATCH, show_default=False,
                                         help="The merged answers file (replaced atomically).")],
    json_out: SummaryJson = False, debug: o.Debug = False,
) -> None:
    """Combine answer files into one, keeping each id once (an answer over a failure), then summarize."""
    with errors_to_exit(debug):
        from dycoke_cli import render
        from dycoke_cli.batch.answers import merge_lines, read_lines, rewrite
        from dycoke_cli.render.batch import print_summary
        from dycoke_cli.batch.summary import summarize
        from dycoke_cli.errors import BadInputError

        parts = []
        for path in files:
            if not path.is_file():
                raise BadInputError(f"answers file '{path}' does not exist")
            lines, bad = read_lines(path)
            if bad:
                render.notice(f"{path}: skipped {bad} incomplete or corrupt line(s)")
            parts.append(lines)
        merged = merge_lines(parts)
        rewrite(output, merged)
        print_summary(summarize(merged, output), json_out)
