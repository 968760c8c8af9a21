"""Writing Plotly figures to files: self-contained HTML (works offline) or PNG."""

from __future__ import annotations

from pathlib import Path


class PlotError(ValueError):
    """The plot cannot be written (unknown suffix, no PNG renderer)."""


def save_figure(figure, path: str | Path) -> Path:
    """Write `figure` to `path`; the suffix picks the format (.html or .png).

    HTML embeds plotly.js, so the file opens without network access (clusters are often offline).

    >>> save_figure(plotly.express.line(x=[0, 1], y=[1, 2]), "states.html")  # doctest: +SKIP
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        figure.write_html(path, include_plotlyjs=True, full_html=True)
    elif suffix == ".png":
        figure.write_image(path, format="png", width=1200, height=600)
    else:
        raise PlotError(f"cannot write a plot to {path}: use a .html or .png file name")
    return path
