"""`dycoke profile`: the same video and question under several settings, side by side.

Order of work follows the CLI's rule of failing fast: settings, --plot and output paths are checked
before the video is decoded, and the video is decoded before the slow model load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dycoke_cli.commands import options as o
from dycoke_cli.commands.common import decode_video, errors_to_exit, load
from dycoke_cli.models.source import DEFAULT_MODEL

PROFILE = "Profile"
DEFAULT_QUESTION = "What happens in this video?"


def profile(
    video: Annotated[Path, typer.Argument(help="Video file.", show_default=False)],
    question: Annotated[str, typer.Argument(help="The question every setting answers.")] = DEFAULT_QUESTION,
    settings: Annotated[str | None, typer.Option(
        "--settings", envvar="DYCOKE_PROFILE_SETTINGS", rich_help_panel=PROFILE, show_default="none,dycoke",
        help="Comma-separated settings, each BASE or BASE:KEY=VALUE:KEY=VALUE... with BASE none, dycoke, ttm or kv "
             "and KEY k, variant, p, layer or gate, e.g. none,dycoke:k=0.5,dycoke:k=0.9:p=0.8,ttm:k=0.7. "
             "The first is the baseline of every ratio.",
    )] = None,
    sweep: Annotated[str | None, typer.Option(
        "--sweep", rich_help_panel=PROFILE,
        help="KEY=V1,V2,... or BASE:KEY=V1,V2,... adds one setting per value after --settings (which "
             "then defaults to none alone; BASE defaults to dycoke), e.g. ttm-k=0.3,0.5,0.7,0.9.",
    )] = None,
    repeats: Annotated[int, typer.Option(
        "--repeats", "-n", envvar="DYCOKE_PROFILE_REPEATS", min=1, rich_help_panel=PROFILE,
        help="Measured runs per setting, after one warm-up run; medians and min-max are reported.",
    )] = 3,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", rich_help_panel=PROFILE, help="Also write the JSON report to this file.",
    )] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", rich_help_panel=PROFILE,
        help="Draw time to first token and agreement against visual tokens kept (PNG; needs matplotlib, "
             "the 'plot' extra).",
    )] = None,
    model: o.Model = DEFAULT_MODEL, quant: o.Quant = "auto", device: o.Device = "auto", dtype: o.Dtype = "auto",
    offline: o.Offline = False, trust_remote_code: o.TrustRemoteCode = False,
    frames: o.Frames = 32, fps: o.Fps = None, max_frames: o.MaxFrames = None, start: o.Start = None,
    end: o.End = None,
    max_new_tokens: o.MaxNewTokens = o.DEFAULT_GENERATION.max_new_tokens,
    temperature: o.Temperature = 0.0, top_p: o.TopP = 1.0, seed: o.Seed = 0, debug: o.Debug = False,
) -> None:
    """Run one question under several compression settings and compare them: a table on stderr, then one
    JSON document as the last line of stdout."""
    with errors_to_exit(debug):
        from dycoke_cli import render
        from dycoke_cli.profile.report import plan_settings

        plan = plan_settings(settings, sweep)
        if plot is not None:
            from dycoke_cli.render.profile import require_matplotlib

            require_matplotlib()
        for path in (output, plot):
            _check_writable(path)
        sampling = o.sampling(frames, fps, max_frames, start, end)
        generation = o.generation(max_new_tokens, temperature, top_p, seed)
        report = _measure(video, question, plan, sampling, generation, repeats,
                          (model, device, dtype, quant, offline, trust_remote_code))
        _publish(report, output, plot)
        render.print_json(report)


def _measure(video, question, plan, sampling, generation, repeats, load_args) -> dict:
    """Decode (a bad video fails here, before the load), load, then the warm-up and measured rounds."""
    from dycoke_cli.render import profile as profile_render
    from dycoke_cli.engine import encode_frames
    from dycoke_cli.profile.report import run_profile

    frames, decode_s = decode_video(video, sampling)
    lm = load(*load_args)
    with profile_render.progress() as on_progress:
        on_progress("warm-up: encoding the video")
        first = encode_frames(lm, video, frames, decode_s)
        return run_profile(lm, video, sampling, question, plan, generation, repeats, first_encoding=first,
                           on_progress=on_progress)


def _publish(report: dict, output: Path | None, plot: Path | None) -> None:
    from dycoke_cli.render import profile as profile_render

    profile_render.print_report(report)
    if output is not None:
        output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if plot is not None:
        profile_render.plot(report, plot)


def _check_writable(path: Path | None) -> None:
    """An output whose folder is missing is reported before minutes of measuring, not after."""
    from dycoke_cli.errors import BadInputError

    if path is not None and not path.resolve().parent.is_dir():
        raise BadInputError(f"cannot write '{path}': folder '{path.parent}' does not exist")
