"""`dycoke run` (a JSONL file of questions, resumable, shardable) and `dycoke merge` (shard files)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dycoke_cli.commands import options as o
from dycoke_cli.commands.common import errors_to_exit, inspect, kept_pictures, load

BATCH = "Batch"

Output = Annotated[Optional[Path], typer.Option(
    "--output", "-o", metavar="FILE", envvar="DYCOKE_OUTPUT", rich_help_panel=BATCH, show_default=False,
    help="Answers file (JSONL), appended to and resumed; default <input>.answers.jsonl.",
)]
Shard = Annotated[Optional[str], typer.Option(
    "--shard", metavar="I/N", envvar="DYCOKE_SHARD", rich_help_panel=BATCH, show_default=False,
    help="i/N: run the i-th of N parts of the videos (0-based) into <output>.shard-i-of-N.jsonl.",
)]
RetryFailed = Annotated[bool, typer.Option(
    "--retry-failed", envvar="DYCOKE_RETRY_FAILED", rich_help_panel=BATCH,
    help="Run again the records whose earlier attempt failed (answered ones are always skipped).",
)]
SummaryJson = Annotated[bool, typer.Option(
    "--json", rich_help_panel=o.OUTPUT, help="Print the summary (with several settings: the comparison) as one "
                                             "JSON object on stdout.",
)]
Plot = Annotated[Optional[Path], typer.Option(
    "--plot", metavar="PNG", rich_help_panel=o.OUTPUT, show_default=False,
    help="Draw accuracy against visual tokens kept, per setting, into a PNG (needs matplotlib).",
)]


@o.with_flags(model=o.ModelFlags, sampling=o.SamplingFlags, compress=o.SettingsFlags, gen=o.GenerationFlags,
              cache=o.CacheFlags)
def run(
    questions: Annotated[str, typer.Argument(
        metavar="QUESTIONS.jsonl",
        help="JSONL file, one question a line (video, question; optional id, options, answer, task, frames, "
             "max_new_tokens, compress); - reads stdin.", show_default=False)],
    output: Output = None, shard: Shard = None, retry_failed: RetryFailed = False,
    json_out: SummaryJson = False, plot: Plot = None, save_kept: o.SaveKept = None, verbose: o.Verbose = False,
    debug: o.Debug = False,
    *, model: o.ModelFlags, sampling: o.SamplingFlags, compress: o.SettingsFlags, gen: o.GenerationFlags,
    cache: o.CacheFlags,
) -> None:
    """Answer every question of a JSONL file into an answers file (resumable), then summarize; with several
    --compress settings, every question under each (one answers file each), then compare them.

    Each video is decoded and encoded once for all its questions and the settings that encode the same frames.
    Exit 1 if any record failed."""
    with errors_to_exit(debug, verbose):
        from dycoke_cli import render
        from dycoke_cli.batch import job as batch
        from dycoke_cli.batch.records import read_records
        from dycoke_cli.outputs import resolve_output
        from dycoke_cli.plan import check_method
        from dycoke_cli.render.batch import BatchProgress

        if questions != "-" and Path(questions).is_dir():
            from dycoke_cli.errors import BadInputError

            raise BadInputError(f"'{questions}' is a folder, and run reads a JSONL file of questions; to ask "
                                f"about every video in it: dycoke ask {questions} QUESTION")
        part = batch.parse_shard(shard)
        specs = compress.specs()
        outputs = batch.setting_outputs(questions, output, part, [spec.label for spec in specs])
        plot = None if plot is None else resolve_output(plot)
        _check_outputs(outputs, plot)
        pictures = kept_pictures(save_kept)
        cache.checked()
        processes = batch.Processes()
        request = sampling.request()
        with batch.writer_locks(outputs, processes):
            records = read_records(questions)
            info = inspect(model)
            for spec in specs:  # the run's own settings: exit 2 before any weight loads
                check_method(spec.build(), info.adapter, f"--compress '{spec.label}'" if len(specs) > 1 else None)
            job = batch.Job(
                source=questions, records=records, settings=[batch.Setting(s, out) for s, out in zip(specs, outputs)],
                sampling=request, generation=gen.generation(), shard=part, retry_failed=retry_failed, debug=debug,
                system=gen.system, pictures=pictures, cache=cache.open(),
            )
            label = "answering" if processes.count == 1 else f"rank {processes.index}/{processes.count}"
            lines = batch.run_job(
                job, processes, lambda: load(info, model, processes.device(model.device), verbose),
                BatchProgress(enabled=processes.index == 0, label=label),
            )
        if lines is None:  # another rank: rank 0 reports for the whole job
            return
        failed = _report(questions, specs, outputs, lines, json_out, plot)
        if failed["failed_input"]:
            render.notice(f"{failed['failed_input']} record(s) cannot run as written (bad JSON, a missing field, a "
                          "missing or unreadable video: their lines are named above); fix them and rerun the same "
                          "command: it reads them again and skips what is answered")
        if failed["failed_runtime"]:
            render.notice(f"{failed['failed_runtime']} record(s) failed while running; rerun with --retry-failed "
                          "to try them again")
        if failed["failed"]:
            raise typer.Exit(1)


def _check_outputs(outputs: list[Path], plot: Path | None) -> None:
    """Every file the run will write, before any work."""
    from dycoke_cli.outputs import check_writable

    for path in outputs:
        check_writable(path, "--output")
    if plot is not None:
        from dycoke_cli.render.plots import require_matplotlib

        require_matplotlib()
        check_writable(plot, "--plot")


def _report(source: str, specs: list, outputs: list[Path], lines: list[list[dict]], json_out: bool,
            plot: Path | None) -> dict[str, int]:
    """The summary of one setting, or the comparison of several; the plot. Returns the failed records of
    every setting together: failed, failed_input, failed_runtime."""
    from dycoke_cli import render
    from dycoke_cli.batch.compare import compare
    from dycoke_cli.batch.summary import summarize
    from dycoke_cli.render import compare as view
    from dycoke_cli.render.batch import print_summary

    report = compare(source, specs, outputs, lines)
    if len(specs) == 1:
        print_summary(summarize(lines[0], outputs[0]), json_out)
    else:
        view.print_comparison(report, json_out)
    if plot is not None and not view.plot(report, plot):
        render.notice("--plot: no scored record to plot (records need an answer to be scored)")
    return {key: sum(s[key] for s in report["settings"]) for key in ("failed", "failed_input", "failed_runtime")}


def merge(
    files: Annotated[list[Path], typer.Argument(metavar="ANSWERS.jsonl...", help="Answer files to combine (e.g. the --shard outputs).",
                                                show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE", rich_help_panel=BATCH, show_default=False,
                                         help="The merged answers file (replaced atomically).")],
    partial: Annotated[bool, typer.Option(
        "--partial", rich_help_panel=BATCH,
        help="Merge shard files (*.shard-i-of-N.jsonl) even when some of the N are not given.")] = False,
    json_out: SummaryJson = False, debug: o.Debug = False,
) -> None:
    """Combine answer files into one, keeping each id once (an answer over a failure), then summarize.
    Shard files of a set that is not whole are refused unless --partial."""
    with errors_to_exit(debug):
        from dycoke_cli import render
        from dycoke_cli.batch.answers import merge_lines, read_lines, rewrite
        from dycoke_cli.batch.summary import summarize
        from dycoke_cli.errors import BadInputError
        from dycoke_cli.outputs import check_writable, exclusive, resolve_output
        from dycoke_cli.render.batch import print_summary

        from dycoke_cli.batch.answers import missing_shards

        missing = missing_shards(files)
        if missing and not partial:
            raise BadInputError(f"{missing}; pass --partial to merge the shards given")
        if missing:
            render.notice(f"{missing}: merging the shards given (--partial)")
        output = resolve_output(output)
        check_writable(output, "--output")
        with exclusive(output):
            parts = []
            for path in files:
                if not path.exists():
                    raise BadInputError(f"answers file '{path}' does not exist")
                if not path.is_file():
                    raise BadInputError(f"answers file '{path}' is not a regular file")
                lines, bad = read_lines(path)
                if bad:
                    render.notice(f"{path}: skipped {bad} incomplete or corrupt line(s)")
                parts.append(lines)
            merged = merge_lines(parts)
            rewrite(output, merged)
        print_summary(summarize(merged, output), json_out, title="dycoke merge")
