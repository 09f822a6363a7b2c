"""How a `dycoke profile` report looks: the side-by-side table on stderr, and the optional plot.

Kept apart from profile/ so the measuring code hands over a plain dict and never touches Rich or
matplotlib; the stderr console is render's, so profile output interleaves with notes and errors.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from dycoke_cli.errors import BadInputError
from dycoke_cli.render import stderr


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


def table(report: dict) -> Table:
    """Settings as rows, so many settings stay readable at 80 columns."""
    title = (f"dycoke profile: {report['model']}, {report['device']} {report['dtype']}, {report['frames']} frames, "
             f"{report['repeats']} repeat(s); x = speedup against '{report['baseline']}'")
    out = Table(title=escape(title), title_justify="left", box=None, pad_edge=False, header_style="bold")
    for i, name in enumerate(COLUMNS):
        out.add_column(name, justify="left" if i == 0 else "right", overflow="fold")
    for row in rows(report):
        out.add_row(*(escape(cell) for cell in row))
    return out


def print_report(report: dict) -> None:
    stderr.print(table(report))
    for note in report["notes"]:
        stderr.print(f"[dim]- {note}[/]", markup=True, highlight=False)


def require_matplotlib() -> None:
    """Fail before any work when --plot cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        # No brackets in the text: the error line is printed as Rich markup, which would eat "[plot]".
        raise BadInputError("--plot needs matplotlib, which is not installed: pip install matplotlib "
                            "(or dycoke's 'plot' extra)")


def plot(report: dict, path: Path) -> None:
    """Time to first token and agreement with `none` against visual tokens kept, one point per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = report["settings"]
    kept = [s["visual_tokens_kept"] for s in settings]  # where they are kept: after layer K for FastV
    ttft = [s["timings"]["time_to_first_token_s"] for s in settings]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(6, 6))
    top.errorbar(kept, [t["median"] for t in ttft], fmt="o",
                 yerr=[[t["median"] - t["min"] for t in ttft], [t["max"] - t["median"] for t in ttft]])
    top.set_ylabel("time to first token (s)")
    for s, x, t in zip(settings, kept, ttft):
        top.annotate(s["label"], (x, t["median"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if report["agreement_reference"] is not None:
        bottom.plot(kept, [s["agreement"]["token_overlap"] for s in settings], "o")
        bottom.set_ylim(-0.05, 1.05)
    bottom.set_ylabel(f"token overlap with {report['agreement_reference'] or '(no none setting)'}")
    bottom.set_xlabel("visual tokens kept")
    fig.suptitle(f"{report['model']}, {report['frames']} frames, {report['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
