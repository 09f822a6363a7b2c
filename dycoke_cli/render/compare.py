"""How a multi-setting `dycoke run` comparison looks: two tables on stderr that fit 80 columns (the
figures per setting; accuracy per task), the JSON document, and the plot of accuracy against tokens kept.

The measuring code hands over the plain report of batch/compare.py; nothing here computes a figure.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from dycoke_cli import render
from dycoke_cli.render import format_bytes

FIGURES = ("setting", "tokens", "TTFT", "prefill", "dec/s", "peak", "accuracy", "agree")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1e3:.0f}ms" if value < 1 else f"{value:.2f}s"


def share(figure: dict | None, key: str = "accuracy") -> str:
    """A share with its 95% interval, in percent: "97.5 94-99" ("-" when nothing was scored)."""
    if not figure or figure.get(key) is None:
        return "-"
    low, high = figure["interval_95"]
    return f"{100 * figure[key]:.1f} {100 * low:.0f}-{100 * high:.0f}"


def _peak(s: dict) -> str:
    value = s.get("peak_gpu_allocated_bytes", s.get("peak_rss_bytes"))
    return "-" if value is None else format_bytes(value).replace(" GiB", "G").replace(" MiB", "M")


def figure_rows(report: dict) -> list[list[str]]:
    """One row per setting: mean visual tokens kept, mean time to first token and prefill, decode rate,
    peak memory, accuracy with its interval, share of answers equal to the first setting's."""
    rows = []
    for s in report["settings"]:
        if s["error"] is not None:
            rows.append([s["label"], "n/a", "-", "-", "-", "-", "-", "-"])
            continue
        agree = s["agreement"]["share"]
        rows.append([s["label"], f"{s['visual_tokens_kept']:,.0f}", _seconds(s["time_to_first_token_s"]),
                     _seconds(s["prefill_s"]),
                     "-" if s["decode_tokens_per_s"] is None else f"{s['decode_tokens_per_s']:.0f}",
                     _peak(s), share(s), "-" if agree is None else f"{agree:.2f}"])
    return rows


def task_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """(task names, one row per setting with each task's accuracy and interval)."""
    tasks = list(dict.fromkeys(t for s in report["settings"] for t in s["tasks"]))
    return tasks, [[s["label"], *(share(s["tasks"].get(t)) for t in tasks)] for s in report["settings"]]


def print_comparison(report: dict, as_json: bool) -> None:
    """The tables on stderr, or with --json the report as one JSON document on stdout."""
    if as_json:
        render.print_json(report)
        return
    first = report["settings"][0]
    title = f"dycoke run: {len(report['settings'])} settings, {first['records']:,} records each"
    render.stderr.print(render.table(title, list(FIGURES), figure_rows(report)))
    tasks, rows = task_rows(report)
    if tasks:
        render.stderr.print(render.table("accuracy per task, % and 95% interval", ["setting", *tasks], rows))
    for line in ("tokens, TTFT, prefill: mean per answer; accuracy: % and 95% interval",
                 f"agree: share of answers the same as those of {report['baseline']}"):
        render.stderr.print(f"[dim]{escape(line)}[/]", markup=True, highlight=False)
    for s in report["settings"]:
        if s["error"] is not None:
            render.notice(f"{s['label']}: {s['error']}")
        elif s["failed"]:
            render.notice(f"{s['label']}: {s['failed']:,} record(s) failed")
    for s in report["settings"]:
        render.stderr.print(f"[dim]{escape(s['label'])}: {escape(s['output'])}[/]", markup=True, highlight=False)


def figure(report: dict):
    """Accuracy (95% Wilson bars) against mean visual tokens kept: one panel for all scored records and
    one per task, one colour and marker per method, its settings joined in order of tokens. Returns the
    figure (None when nothing was scored)."""
    from dycoke_cli.render.plots import legend, methods_in, points, pyplot

    settings = [s for s in report["settings"] if s["error"] is None and s["scored"]]
    if not settings:
        return None
    plt = pyplot()
    tasks = list(dict.fromkeys(t for s in settings for t in s["tasks"]))
    panels = [("all questions", lambda s: s)] + [(t, lambda s, t=t: s["tasks"].get(t)) for t in tasks]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.8, 3.8), sharey=True, squeeze=False)
    methods = methods_in(settings)
    for ax, (name, part) in zip(axes[0], panels):
        def accuracy(s, part=part):
            figure_ = part(s)
            return None if not figure_ or figure_["accuracy"] is None else 100 * figure_["accuracy"]

        def bars(s, part=part):
            low, high = part(s)["interval_95"]
            return 100 * part(s)["accuracy"] - 100 * low, 100 * high - 100 * part(s)["accuracy"]

        handles = points(ax, settings, methods, lambda s: s["visual_tokens_kept"], accuracy, bars)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("visual tokens kept (mean)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy % (95% Wilson)")
    legend(axes[0][-1], handles, loc="lower right")
    fig.tight_layout()
    return fig


def plot(report: dict, path: Path) -> bool:
    """Write the figure as a PNG; False (nothing written) when no setting has scored records."""
    from dycoke_cli.render.plots import pyplot

    fig = figure(report)
    if fig is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return True
