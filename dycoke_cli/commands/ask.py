"""`dycoke ask`: one or more questions about a video, answered against one encoding."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dycoke_cli.commands import options as o
from dycoke_cli.commands.common import errors_to_exit, open_session, prepare


@o.with_flags(model=o.ModelFlags, sampling=o.SamplingFlags, compress=o.CompressFlags, gen=o.GenerationFlags,
              cache=o.CacheFlags)
def ask(
    video: Annotated[Path, typer.Argument(metavar="VIDEO", help="Video file.", show_default=False)],
    questions: Annotated[list[str], typer.Argument(
        metavar="QUESTION...",
        help="One or more questions (- reads one from standard input); the video is encoded once.",
        show_default=False)],
    json_out: o.Json = False, quiet: o.Quiet = False, verbose: o.Verbose = False, debug: o.Debug = False,
    *, model: o.ModelFlags, sampling: o.SamplingFlags, compress: o.CompressFlags, gen: o.GenerationFlags,
    cache: o.CacheFlags,
) -> None:
    """Answer questions about a video; the answer streams to stdout, stats go to stderr."""
    with errors_to_exit(debug, verbose):
        from dycoke_cli import render
        from dycoke_cli.commands.questions import read_questions
        from dycoke_cli.render.answer import print_stats

        questions = read_questions(questions)
        cache.checked()
        request = prepare(video, questions, model, sampling, compress, gen, gen.system)
        session = open_session(request, model, gen.system, verbose, cache.open())
        for i, question in enumerate(questions, 1):
            if len(questions) > 1 and not (json_out or quiet):
                render.question_header(i, len(questions), question)
            answer = session.ask(question, gen.generation(), on_text=None if json_out else render.write_text)
            if json_out:
                render.print_json(answer_record(video, question, answer, sampling_flags=sampling, gen=gen))
                continue
            render.end_answer()
            if not quiet:
                print_stats(answer.stats, verbose)


def answer_record(video, question: str, answer, sampling_flags, gen) -> dict:
    """One --json object: the question, the answer, every figure, and the settings that produced it."""
    from dataclasses import asdict

    return {"video": str(video), "question": question, "answer": answer.text, **answer.stats.to_dict(),
            "generation": asdict(gen.generation()) | {"system": gen.system},
            "sampling": {k: v for k, v in asdict(sampling_flags).items() if v is not None}}
