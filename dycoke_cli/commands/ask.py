"""`dycoke ask`: one or more questions about one or more videos, each video encoded once.

VIDEO may be a file, a folder of videos or a glob pattern (dycoke_cli/video/listing.py): the model
loads once and every video gets its own encoding and Session, so its questions share the cached
prefix. With no QUESTION and a standard input that is not a terminal, the question is read from it
(`echo "What happens?" | dycoke ask clip.mp4`), as `-` does explicitly.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dycoke_cli.commands import options as o
from dycoke_cli.commands.common import errors_to_exit, load, prepare_all, start_session


@o.with_flags(model=o.ModelFlags, sampling=o.SamplingFlags, compress=o.CompressFlags, gen=o.GenerationFlags)
def ask(
    video: Annotated[str, typer.Argument(
        metavar="VIDEO", show_default=False,
        help="Video file, a folder of videos, or a glob pattern (\"clips/*.mp4\"): every video is answered.")],
    questions: Annotated[Optional[list[str]], typer.Argument(
        metavar="QUESTION...", show_default=False,
        help="One or more questions, each video encoded once; - reads one from standard input, as does no "
             "question at all when standard input is not a terminal.")] = None,
    json_out: o.Json = False, quiet: o.Quiet = False, verbose: o.Verbose = False, debug: o.Debug = False,
    *, model: o.ModelFlags, sampling: o.SamplingFlags, compress: o.CompressFlags, gen: o.GenerationFlags,
) -> None:
    """Answer questions about a video; the answer streams to stdout, stats go to stderr."""
    with errors_to_exit(debug, verbose):
        from dycoke_cli import render
        from dycoke_cli.commands.questions import read_questions
        from dycoke_cli.render.answer import print_stats
        from dycoke_cli.video.listing import split_arguments

        videos, questions = split_arguments(video, list(questions or []))
        questions = read_questions(questions)
        requests = prepare_all(videos, questions, model, sampling, compress, gen, gen.system)
        lm = None
        for path, request in zip(videos, requests):
            if len(videos) > 1 and not (json_out or quiet):
                render.video_header(path)
            lm = lm or load(request.info, model, verbose=verbose, quiet=quiet)
            session = start_session(lm, request, gen.system)
            for i, question in enumerate(questions, 1):
                if len(questions) > 1 and not (json_out or quiet):
                    render.question_header(i, len(questions), question)
                answer = session.ask(question, gen.generation(), on_text=None if json_out else render.write_text)
                if json_out:
                    render.print_json(answer_record(path, question, answer, sampling_flags=sampling, gen=gen))
                    continue
                render.end_answer()
                if not quiet:
                    print_stats(answer.stats, verbose)
            session = None  # this video's tokens and cache go before the next is encoded


def answer_record(video, question: str, answer, sampling_flags, gen) -> dict:
    """One --json object: the question, the answer, every figure, and the settings that produced it."""
    from dataclasses import asdict

    return {"video": str(video), "question": question, "answer": answer.text, **answer.stats.to_dict(),
            "generation": asdict(gen.generation()) | {"system": gen.system},
            "sampling": {k: v for k, v in asdict(sampling_flags).items() if v is not None}}
