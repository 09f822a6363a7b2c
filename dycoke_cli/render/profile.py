"""How a `dycoke profile` report looks: the side-by-side Rich table on stderr, and the optional plot.

Kept apart from profile.py so the measuring code hands over a plain dict and never touches Rich or
matplotlib; the stderr console is render.py's, so profile output interleaves with notes and errors.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from dycoke_cli.errors import BadInputError
from dycoke_cli.profile.report import STAGES
from dycoke_cli.render import format_bytes, stderr

_MEMORY = [("peak_gpu_allocated_bytes", "peak GPU allocated"), ("peak_gpu_reserved_bytes", "peak GPU reserved"),
           ("peak_rss_bytes", "peak RSS")]


@contextmanager
def progress():
    """A spinner on stderr; yields the callback that updates its line."""
    with stderr.status("profiling", spinner="dots") as status:
        yield lambda text: status.update(f"profiling: {text}")


def _x(ratio) -> str:
    return "" if ratio is None else f" [cyan]{ratio:.2f}x[/]"


def _stage(key: str, t: dict, ratio) -> str:
    """Median and ratio on the first line, the min-max range (same unit) dimmed on the second."""
    if key == "decode_tokens_per_s":
        scale, unit, digits = 1.0, "/s", 1
    elif t["median"] < 1:
        scale, unit, digits = 1e3, " ms", 1
    else:
        scale, unit, digits = 1.0, " s", 2
    low, high = (f"{t[k] * scale:.{digits}f}" for k in ("min", "max"))
    return f"{t['median'] * scale:.{digits}f}{unit}{_x(ratio)}\n[dim]{low}-{high}[/]"


def _rows(report: dict) -> list[tuple[str, list[str]]]:
    settings = report["settings"]
    rows = [(label, [_stage(key, s["timings"][key], s["ratios"]["speedup"][key]) for s in settings])
            for key, label in STAGES]
    rows.append(("visual tokens kept", [f"{s['visual_tokens_after']:,}{_x(s['ratios']['visual_tokens'])}\n"
                                        f"[dim]{s['visual_tokens_kept_pct']:.1f}% of {s['visual_tokens_before']:,}[/]"
                                        for s in settings]))
    rows.append(("KV entries / decode step", [f"{s['kv_entries_attended_mean']:,.1f}"
                                              f"{_x(s['ratios']['kv_entries_attended'])}\n"
                                              f"[dim]of {s['kv_entries_full']:,}[/]" for s in settings]))
    rows.append(("prefill TFLOPs (theory)", [f"{s['prefill_flops'] / 1e12:.3g}" + _x(s["ratios"]["prefill_flops"])
                                             for s in settings]))
    for key, label in _MEMORY:
        if key in settings[0]["memory"]:
            rows.append((label, [format_bytes(s["memory"][key]) + _x(s["ratios"]["memory"][key]) for s in settings]))
    if report["agreement_reference"] is not None:
        rows.append((f"agrees with {report['agreement_reference']}", [
            ("exact" if a["exact_match"] else "differs") + f"\n[dim]overlap {a['token_overlap']:.2f}, "
            f"prefix {a['common_prefix_tokens']}[/]" for a in (s["agreement"] for s in settings)]))
    rows.append(("answer", [escape(_clip(s["answer"])) for s in settings]))
    return rows


def _clip(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def table(report: dict) -> Table:
    """Settings as columns; each cell: median (min-max) and, dimmed, the ratio to the first column."""
    title = (f"dycoke profile: {report['model']} on {report['device']} ({report['dtype']}), {report['frames']} frames, "
             f"{report['repeats']} repeat(s) after a warm-up; ratios against '{report['baseline']}'")
    out = Table(title=escape(title), title_justify="left", show_lines=False)
    out.add_column("", style="bold")
    for s in report["settings"]:
        out.add_column(escape(s["label"]), overflow="fold")
    for label, cells in _rows(report):
        out.add_row(label, *cells)
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
    kept = [s["visual_tokens_after"] for s in settings]
    ttft = [s["timings"]["prefill_s"] for s in settings]
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
