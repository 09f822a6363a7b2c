"""What the plots of `profile --plot` and `run --plot` share: one colour and one marker per method, a
legend, and points that never hide each other.

Settings compared at equal budgets keep the same number of tokens, so their points share one x: each
method's points are shifted sideways by a few screen points (its own offset, the same at every x), so
they sit side by side at any zoom instead of on top of each other, and the legend, not text beside the
points, says which is which.
"""

from __future__ import annotations

from dycoke_cli.errors import BadInputError

MARKERS = "osD^vP*Xph<>"
DODGE_PT = 7.0  # screen points between neighbouring methods' points at one x


def require_matplotlib() -> None:
    """Fail before any work when --plot cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        # No brackets in the text: the error line is printed as Rich markup, which would eat "[plot]".
        raise BadInputError("--plot needs matplotlib, which is not installed: pip install matplotlib "
                            "(or dycoke's 'plot' extra)") from None


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


def dodged(ax, methods: list[str], method: str):
    """The data transform of `ax` shifted sideways for `method`'s points (centred on the true x)."""
    from matplotlib.transforms import offset_copy

    shift = (methods.index(method) - (len(methods) - 1) / 2) * DODGE_PT
    return offset_copy(ax.transData, fig=ax.figure, x=shift, y=0, units="points")


def points(ax, settings: list[dict], methods: list[str], x, y, err=None) -> None:
    """One marker per setting at (x(s), y(s)), one line per method through its points in x order,
    error bars err(s) = (below, above) when given; the legend names each method once."""
    styles = style(methods)
    for method in methods:
        own = sorted((s for s in settings if s["method"] == method and y(s) is not None), key=x)
        if not own:
            continue
        xs, ys = [x(s) for s in own], [y(s) for s in own]
        yerr = None if err is None else [[err(s)[0] for s in own], [err(s)[1] for s in own]]
        ax.errorbar(xs, ys, yerr=yerr, linestyle="-", linewidth=1, markersize=6, capsize=2, label=method,
                    transform=dodged(ax, methods, method), **styles[method])
        # matplotlib sizes the axes from artists drawn in plain data coordinates only: add these by hand.
        low = ys if yerr is None else [v - e for v, e in zip(ys, yerr[0])]
        high = ys if yerr is None else [v + e for v, e in zip(ys, yerr[1])]
        ax.update_datalim(list(zip(xs, low)) + list(zip(xs, high)))
    ax.margins(x=0.12)  # room for the sideways shifts at both ends
    ax.autoscale_view()
