"""What the plots of `profile --plot` and `run --plot` share: one colour and one marker per method, a
legend, and points that never hide each other.

Settings compared at equal budgets keep the same number of tokens, so their points share one x: the
markers of points that would sit on top of each other (x within 1% of the axis' span) are spread
sideways by a few screen points, centred on their true x, so they stand side by side at any zoom; a
point alone at its x stays exactly there, and the line joining a method's points runs through the
true x values. The legend, not text beside the points, says which method is which.
"""

from __future__ import annotations

from dycoke_cli.errors import BadInputError

MARKERS = "osD^vP*Xph<>"
DODGE_PT = 7.0  # screen points between neighbouring methods' points at one x


def require(module: str, flag: str, package: str, name: str | None = None) -> None:
    """Fail before any work when `flag` cannot be honoured: `module` (of the pip `package`, called
    `name` in the message) cannot be imported."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        # No brackets in the text: the error line is printed as Rich markup, which would eat "[plot]".
        raise BadInputError(f"{flag} needs {name or package}, which is not installed: pip install {package} "
                            "(or dycoke's 'plot' extra)") from None


def require_matplotlib() -> None:
    """Fail before any work when --plot cannot be honoured."""
    require("matplotlib", "--plot", "matplotlib")


def pyplot():
    """matplotlib.pyplot on the file-only backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def methods_in(settings: list[dict]) -> list[str]:
    """The methods of `settings` in first-seen order (each setting dict has "method")."""
    return list(dict.fromkeys(s["method"] for s in settings))


def style(methods: list[str]) -> dict[str, dict]:
    """method -> matplotlib keywords (color, marker): one of each per method, in order."""
    return {m: {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)]} for i, m in enumerate(methods)}


def dodged(ax, shift_pt: float):
    """The data transform of `ax`, shifted sideways by `shift_pt` screen points."""
    from matplotlib.transforms import offset_copy

    return offset_copy(ax.transData, fig=ax.figure, x=shift_pt, y=0, units="points")


def shifts(xs: list[float]) -> list[float]:
    """Per point, its sideways shift in screen points: points whose x lie within 1% of the span of `xs`
    of each other form a cluster, spread DODGE_PT apart around its centre (0 for a point alone)."""
    span = (max(xs) - min(xs)) or 1.0
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    clusters: list[list[int]] = []
    for i in order:
        if clusters and xs[i] - xs[clusters[-1][-1]] <= 0.01 * span:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    out = [0.0] * len(xs)
    for cluster in clusters:
        for rank, i in enumerate(cluster):
            out[i] = (rank - (len(cluster) - 1) / 2) * DODGE_PT
    return out


def points(ax, settings: list[dict], methods: list[str], x, y, err=None) -> list:
    """One marker per setting at (x(s), y(s)) with error bars err(s) = (below, above) when given, one
    line per method through its points in x order, markers of coinciding points spread sideways.
    Returns the legend's handles, one per method drawn."""
    from matplotlib.lines import Line2D

    styles = style(methods)
    shown = [s for s in settings if y(s) is not None]
    if not shown:
        return []
    shift = dict(zip(map(id, shown), shifts([x(s) for s in shown])))
    handles = []
    for method in methods:
        own = sorted((s for s in shown if s["method"] == method), key=x)
        if not own:
            continue
        colour, marker = styles[method]["color"], styles[method]["marker"]
        ax.plot([x(s) for s in own], [y(s) for s in own], color=colour, linewidth=1, alpha=0.6)
        for s in own:
            below, above = (0.0, 0.0) if err is None else err(s)
            ax.errorbar([x(s)], [y(s)], yerr=None if err is None else [[below], [above]], color=colour,
                        marker=marker, markersize=6, capsize=2, linestyle="none", transform=dodged(ax, shift[id(s)]))
            # matplotlib sizes the axes from artists in plain data coordinates only: the bars by hand.
            ax.update_datalim([(x(s), y(s) - below), (x(s), y(s) + above)])
        handles.append(Line2D([], [], color=colour, marker=marker, linewidth=1, label=method))
    ax.margins(x=0.08)
    ax.autoscale_view()
    return handles


def legend(ax, handles: list, **options) -> None:
    """One legend entry per method (the handles `points` returned)."""
    ax.legend(handles=handles, title="method", fontsize=8, title_fontsize=8, **options)
