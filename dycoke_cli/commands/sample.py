"""`dycoke sample DIR`: generated clips with questions whose answers are known (dycoke_cli/shapes.py),
for `--model builtin:shapes` or to try any model offline.

The folder is checked before any clip is drawn (a file, or a place that cannot be written, is bad
input, exit 2); a failure while writing (a full disk) is one line and exit 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dycoke_cli.commands import options as o
from dycoke_cli.commands.common import errors_to_exit

SAMPLE = "Clips"
MAX_CLIPS = 100_000  # 4 questions and one ~20 KB mp4 each


def sample(
    folder: Annotated[Path, typer.Argument(metavar="DIR", show_default=False,
                                           help="Folder for clips/*.mp4 and questions.jsonl (created if missing).")],
    clips: Annotated[int, typer.Option("--clips", "-n", metavar="N", min=1, max=MAX_CLIPS, rich_help_panel=SAMPLE,
                                       help="How many clips (four questions each).")] = 1,
    seed: Annotated[int, typer.Option("--seed", metavar="S", min=0, max=o.MAX_SEED, rich_help_panel=SAMPLE,
                                      help="Clip i is drawn from (S, i): the same seed gives the same clips.")] = 0,
    crf: Annotated[int, typer.Option("--crf", metavar="Q", min=0, max=18, rich_help_panel=SAMPLE,
                                     help="H.264 quality, 0 (lossless) to 18 (visually lossless).")] = 18,
    debug: o.Debug = False,
) -> None:
    """Write generated clips (a coloured square moving, a white flash) and questions.jsonl for dycoke run;
    prints the questions file's path."""
    with errors_to_exit(debug):
        from dycoke_cli import render, shapes

        target = _writable_folder(folder)
        try:
            questions = shapes.make(target, clips, seed, crf)
        except OSError as exc:
            from dycoke_cli.errors import OutputError

            raise OutputError(f"cannot write clips into {folder}: {exc.strerror or exc}") from None
        render.write_text(f"{questions}\n")


def _writable_folder(folder: Path) -> Path:
    """`folder`, created if missing; BadInputError when it is a file or cannot be written."""
    import os

    from dycoke_cli.errors import BadInputError

    if folder.exists() and not folder.is_dir():
        raise BadInputError(f"{folder} is a file, not a folder; give a folder to write the clips into")
    try:
        (folder / "clips").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"cannot create {folder / 'clips'}: {exc.strerror or exc}") from None
    for place in (folder, folder / "clips"):
        if not os.access(place, os.W_OK | os.X_OK):
            raise BadInputError(f"cannot write into {place}: permission denied")
    return folder
