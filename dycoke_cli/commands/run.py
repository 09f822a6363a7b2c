"""`dycoke run` (a JSONL file of questions, resumable, shardable) and `dycoke merge` (shard files)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dycoke_cli.commands import options as o
from dycoke_cli.commands.common import errors_to_exit, inspect, load

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
    "--json", rich_help_panel=o.OUTPUT, help="Print the summary as one JSON object on stdout.",
)]


@o.with_flags(model=o.ModelFlags, sampling=o.SamplingFlags, compress=o.CompressFlags, gen=o.GenerationFlags)
def run(
    questions: Annotated[str, typer.Argument(
        metavar="QUESTIONS.jsonl",
        help="JSONL file, one question a line (video, question; optional id, options, answer, task, frames, "
             "max_new_tokens, compress); - reads stdin.", show_default=False)],
    output: Output = None, shard: Shard = None, retry_failed: RetryFailed = False,
    json_out: SummaryJson = False, verbose: o.Verbose = False, debug: o.Debug = False,
    *, model: o.ModelFlags, sampling: o.SamplingFlags, compress: o.CompressFlags, gen: o.GenerationFlags,
) -> None:
    """Answer every question of a JSONL file into an answers file (resumable), then summarize.

    Each video is encoded once for all its questions. Exit 1 if any record failed."""
    with errors_to_exit(debug, verbose):
        from dycoke_cli import render
        from dycoke_cli.batch import job as batch
        from dycoke_cli.batch.records import read_records
        from dycoke_cli.outputs import check_writable
        from dycoke_cli.plan import check_method
        from dycoke_cli.render.batch import BatchProgress, print_summary

        if questions != "-" and Path(questions).is_dir():
            from dycoke_cli.errors import BadInputError

            raise BadInputError(f"'{questions}' is a folder, and run reads a JSONL file of questions; to ask "
                                f"about every video in it: dycoke ask {questions} QUESTION")
        part = batch.parse_shard(shard)
        spec = compress.spec()
        output_path = batch.default_output(questions, output, part)
        check_writable(output_path, "--output")
        processes = batch.Processes()
        request = sampling.request()
        with batch.writer_locks(output_path, processes):
            records = read_records(questions)
            info = inspect(model)
            check_method(spec.build(), info.adapter)  # the run's own setting: exit 2 before any weight loads
            job = batch.Job(
                source=questions, records=records, output=output_path, sampling=request,
                compression=spec, generation=gen.generation(), shard=part, retry_failed=retry_failed, debug=debug,
                system=gen.system,
            )
            label = "answering" if processes.count == 1 else f"rank {processes.index}/{processes.count}"
            summary = batch.run_job(
                job, processes, lambda: load(info, model, processes.device(model.device), verbose),
                BatchProgress(enabled=processes.index == 0, label=label),
            )
        if summary is None:  # another rank: rank 0 reports for the whole job
            return
        print_summary(summary, json_out)
        if summary["failed_input"]:
            render.notice(f"{summary['failed_input']} record(s) cannot run as written (bad JSON, a missing field, a "
                          "missing or unreadable video: their lines are named above); fix them and rerun the same "
                          "command: it reads them again and skips what is answered")
        if summary["failed_runtime"]:
            render.notice(f"{summary['failed_runtime']} record(s) failed while running; rerun with --retry-failed "
                          "to try them again")
        if summary["failed"]:
            raise typer.Exit(1)


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
