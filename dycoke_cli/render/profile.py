"""How a `dycoke profile` report looks: the side-by-side table on stderr, and the optional plot.

Kept apart from profile/ so the measuring code hands over a plain dict and never touches Rich or
matplotlib; the stderr console is render's, so profile output interleaves with notes and errors.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from dycoke_cli.render import stderr, table as render_table


@contextmanager
def progress():
    """A spinner on stderr; yields the callback that updates its line."""
    with stderr.status("profiling", spinner="dots") as status:
        yield lambda text: status.update(f"profiling: {text}")


def _seconds(t: dict) -> str:
    m = t["median"]
    return f"{m * 1e3:.0f}ms" if m < 1 else f"{m:.2f}s"


def _x(ratio) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _agrees(s: dict) -> str:
    a = s["agreement"]
    return "-" if a is None else "exact" if a["exact_match"] else f"{a['token_overlap']:.2f}"


COLUMNS = ("setting", "tokens", "prefill", "TTFT", "TTFT x", "dec/s", "LM TF", "vis TF", "agree")


def rows(report: dict) -> list[list[str]]:
    """One row per setting: the figures that decide between settings, medians over the repeats.
    Ranges, memory, every stage and the effective parameters are in the JSON document."""
    out = []
    for s in report["settings"]:
        t = s["timings"]
        out.append([s["label"], f"{s['visual_tokens_kept']:,}", _seconds(t["prefill_s"]),
                    _seconds(t["time_to_first_token_s"]), _x(s["ratios"]["speedup"]["time_to_first_token_s"]),
                    f"{t['decode_tokens_per_s']['median']:.1f}", f"{s['prefill_flops'] / 1e12:.3g}",
                    "-" if s["vision_flops"] is None else f"{s['vision_flops'] / 1e12:.3g}", _agrees(s)])
    return out


def table(report: dict):
    """Settings as rows, so many settings stay readable at 80 columns."""
    title = (f"dycoke profile: {report['model']}, {report['device']} {report['dtype']}, {report['frames']} frames, "
             f"{report['repeats']} repeat(s); x = speedup against '{report['baseline']}'")
    return render_table(title, list(COLUMNS), rows(report))


def print_report(report: dict) -> None:
    stderr.print(table(report))
    for note in report["notes"]:
        stderr.print(f"[dim]- {note}[/]", markup=True, highlight=False)


def figure(report: dict):
    """Time to first token (median, min-max bars) and agreement with `none` against visual tokens kept:
    one colour and marker per method, named in the legend; a method's points are joined in order of
    tokens and, where it has several settings, labelled with their parameters. Returns the figure."""
    from dycoke_cli.render.plots import legend, methods_in, points, pyplot

    plt = pyplot()
    settings = [{**s, "method": s["compression"]["method"]} for s in report["settings"]]
    methods = methods_in(settings)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(6.4, 6.4))
    kept = lambda s: s["visual_tokens_kept"]  # noqa: E731 - where they are kept: after layer K for FastV
    ttft = lambda s: s["timings"]["time_to_first_token_s"]  # noqa: E731
    handles = points(top, settings, methods, kept, lambda s: ttft(s)["median"],
                     lambda s: (ttft(s)["median"] - ttft(s)["min"], ttft(s)["max"] - ttft(s)["median"]))
    top.set_ylabel("time to first token (s)")
    legend(top, handles, loc="best")
    _parameters(top, settings, methods, kept, lambda s: ttft(s)["median"])
    if report["agreement_reference"] is not None:
        points(bottom, settings, methods, kept, lambda s: s["agreement"]["token_overlap"])
        bottom.set_ylim(-0.05, 1.05)
    bottom.set_ylabel(f"token overlap with {report['agreement_reference'] or '(no none setting)'}")
    bottom.set_xlabel("visual tokens kept")
    fig.suptitle(f"{report['model']}, {report['frames']} frames, {report['device']}", fontsize=10)
    fig.tight_layout()
    return fig


def _parameters(ax, settings: list[dict], methods: list[str], x, y) -> None:
    """Label the points of methods with several settings by their parameters (`k=0.5`), beside the point."""
    for method in methods:
        own = [s for s in settings if s["method"] == method]
        if len(own) < 2:
            continue
        for s in own:
            text = s["label"].partition(":")[2] or "defaults"
            ax.annotate(text, (x(s), y(s)), textcoords="offset points", xytext=(5, 3), fontsize=7)


def plot(report: dict, path: Path) -> None:
    """The figure of `figure`, written as a PNG."""
    from dycoke_cli.render.plots import pyplot

    fig = figure(report)
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
