"""`dycoke profile`: the same video and question under several compression settings, side by side.

Order of work follows the CLI's rule of failing fast: settings, --plot and output paths are checked
first, then the video file, then the model's configuration and one plan per setting (each checked
against the model's limits), and only then is the model loaded and the video decoded.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer

from dycoke_cli.commands import options as o
from dycoke_cli.commands.common import errors_to_exit, inspect, load
from dycoke_cli.errors import SettingsError

PROFILE = "Profile"
DEFAULT_QUESTION = "What happens in this video?"


@o.with_flags(model=o.ModelFlags, sampling=o.SamplingFlags, gen=o.GenerationFlags)
def profile(
    video: Annotated[str, typer.Argument(metavar="VIDEO", help="Video file.", show_default=False)],
    question: Annotated[str, typer.Argument(metavar="[QUESTION]", help="The question every setting answers.")] = DEFAULT_QUESTION,
    compress: Annotated[Optional[list[str]], typer.Option(
        "--compress", "-c", metavar="SPEC", envvar="DYCOKE_PROFILE_COMPRESS", rich_help_panel=PROFILE, show_default="none, dycoke",
        autocompletion=o.compress_values,
        help="A setting to compare, METHOD[:KEY=VALUE,...] as for ask; repeat it. The first is the baseline "
             "of every ratio.")] = None,
    budget: Annotated[Optional[str], typer.Option(
        "--budget", "-b", metavar="B", envvar="DYCOKE_BUDGET", rich_help_panel=PROFILE,
        help=o.BUDGET_HELP + " Applies to every setting that takes one (a spec's own budget= wins).")] = None,
    sweep: Annotated[Optional[str], typer.Option(
        "--sweep", metavar="[METHOD:]KEY=V1,V2,...", rich_help_panel=PROFILE,
        help="[METHOD:]KEY=V1,V2,... adds one setting per value (METHOD defaults to dycoke; KEY may be "
             "budget), e.g. dycoke:k=0.3,0.5,0.7,0.9 or evs:budget=0.5,0.25.")] = None,
    repeats: Annotated[int, typer.Option(
        "--repeats", "-n", metavar="N", envvar="DYCOKE_PROFILE_REPEATS", min=1, max=1000, rich_help_panel=PROFILE,
        help="Measured runs per setting, after one warm-up run; medians and min-max are reported.")] = 3,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", metavar="FILE", envvar="DYCOKE_PROFILE_OUTPUT", rich_help_panel=PROFILE,
        help="Also write the JSON report to this file.")] = None,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", metavar="PNG", envvar="DYCOKE_PROFILE_PLOT", rich_help_panel=PROFILE,
        help="Draw time to first token and agreement against visual tokens kept (PNG; needs matplotlib).")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", rich_help_panel=o.OUTPUT,
        help="Print the JSON report on stdout even on a terminal (it is printed whenever stdout is not a "
             "terminal).")] = False,
    verbose: o.Verbose = False, debug: o.Debug = False,
    *, model: o.ModelFlags, sampling: o.SamplingFlags, gen: o.GenerationFlags,
) -> None:
    """Run one question under several compression settings and compare them: a table on stderr; the JSON
    report on stdout when stdout is not a terminal or with --json, and in the --output file."""
    with errors_to_exit(debug, verbose):
        from dycoke_cli import render
        from dycoke_cli.commands.common import early_probe
        from dycoke_cli.outputs import check_writable, exclusive, resolve_output
        from dycoke_cli.plan import plan_video
        from dycoke_cli.profile.runner import plan_specs
        from dycoke_cli.video.listing import one

        specs = plan_specs(compress, sweep, budget)
        output, plot = (None if path is None else resolve_output(path) for path in (output, plot))
        if plot is not None:
            from dycoke_cli.render.profile import require_matplotlib

            require_matplotlib()
        for path, flag in ((output, "--output"), (plot, "--plot")):
            if path is not None:
                check_writable(path, flag)
        request = sampling.request()
        video = one(video)
        probe = early_probe(video, request)
        info = inspect(model)
        plans = []
        for spec in specs:
            try:
                plans.append((spec.label, plan_video(probe, request, spec, info.adapter, [question], gen.max_new_tokens,
                                                     gen.system)))
            except SettingsError as exc:
                raise SettingsError(f"--compress '{spec.label}': {exc}") from None
        with exclusive(output) if output is not None else nullcontext():
            report = _measure(plans, question, gen.generation(), repeats, info, model, verbose)
            _publish(report, output, plot)
        if json_out or not sys.stdout.isatty():
            render.print_json(report)
        elif output is None:
            render.notice("the JSON report goes to stdout when it is not a terminal, or with --json or --output FILE")


def _measure(plans, question, generation, repeats, info, model, verbose) -> dict:
    """Load, then the warm-up and measured rounds."""
    from dycoke_cli.profile.runner import run_profile
    from dycoke_cli.render import profile as profile_render

    lm = load(info, model, verbose=verbose)
    with profile_render.progress() as on_progress:
        return run_profile(lm, plans, question, generation, repeats, on_progress=on_progress)


def _publish(report: dict, output: Path | None, plot: Path | None) -> None:
    from dycoke_cli.render import profile as profile_render

    profile_render.print_report(report)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if plot is not None:
        plot.parent.mkdir(parents=True, exist_ok=True)
        profile_render.plot(report, plot)
