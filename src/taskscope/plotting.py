"""Writing Plotly figures to files: self-contained HTML (works offline) or PNG."""

from __future__ import annotations

from pathlib import Path


class PlotError(ValueError):
    """The plot cannot be written (unknown suffix, no PNG renderer)."""


PLOT_SUFFIXES = (".html", ".htm", ".png")


def check_plot_path(path: str | Path) -> None:
    """Raise PlotError unless `path` names a format `save_figure` writes (before slow work starts).

    >>> check_plot_path("states.svg")
    Traceback (most recent call last):
    ...
    taskscope.plotting.PlotError: cannot write a plot to states.svg: use a .html or .png file name
    """
    if Path(path).suffix.lower() not in PLOT_SUFFIXES:
        raise PlotError(f"cannot write a plot to {path}: use a .html or .png file name")
    if not Path(path).absolute().parent.is_dir():
        raise PlotError(f"cannot write a plot to {path}: folder {Path(path).absolute().parent} does not exist")
    if Path(path).suffix.lower() == ".png":
        _require_kaleido()


def _require_kaleido() -> None:
    """Fail with the command that installs it when kaleido (Plotly's PNG writer, the `png`
    extra) is missing, rather than with Plotly's error after the work is done."""
    try:
        import kaleido  # noqa: F401  (imported here only: PNG output is optional)
    except ImportError:
        raise PlotError("a PNG plot needs kaleido, which is not installed: pip install 'taskscope[png]' "
                        "(or write the plot to a .html file)") from None


def save_figure(figure, path: str | Path) -> Path:
    """Write `figure` (a Plotly figure, or its dict as `taskscope.presenters.figures` builds
    them) to `path`; the suffix picks the format (.html or .png).

    HTML embeds plotly.js, so the file opens without network access (clusters are often offline).

    >>> save_figure({"data": [{"type": "bar", "x": [1], "y": [2]}]}, "bars.html")  # doctest: +SKIP
    """
    import plotly.graph_objects as go  # imported here: plotly is only needed when a plot is written

    path = Path(path)
    check_plot_path(path)
    if isinstance(figure, dict):
        figure = go.Figure(figure)
    if path.suffix.lower() == ".png":
        _require_browser()
        figure.write_image(path, format="png", width=1200, height=600)
    else:
        figure.write_html(path, include_plotlyjs=True, full_html=True)
    return path


def _require_browser() -> None:
    """Fail with a fix to type when kaleido (1.x renders PNG in a headless Chrome) has none.

    kaleido finds a browser through choreographer: `$BROWSER_PATH` if set, else `chromium`,
    `chromium-browser` or `google-chrome` on PATH or in their usual places (Debian's
    `/usr/bin/chromium` is found), else a Chrome downloaded by `plotly_get_chrome`.
    """
    import os

    if os.environ.get("BROWSER_PATH"):
        return
    try:
        from choreographer.browsers.chromium import Chromium
    except ImportError:  # a kaleido without choreographer finds its own renderer
        return
    if Chromium.find_browser(skip_local=False) is None:
        raise PlotError(
            "a PNG needs Chrome or Chromium and none was found: install one (Debian: apt-get install chromium; "
            "or run plotly_get_chrome), set BROWSER_PATH to it, or write the plot to a .html file"
        )
