"""Plotly figures as plain dicts (data + layout), built from small DataFrames the server
already aggregated. Text that came from logs goes through `plot_text`: Plotly renders a few
HTML tags in labels, so `<` and `>` are sent as entities and show as themselves.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from taskscope.analyses.states import sample_steps

#: at most this many points per line: a curve of 100k transitions is drawn from evenly spaced samples
MAX_POINTS = 400


def plot_text(text) -> str:
    """`text` safe to show as a Plotly label (its HTML-like markup shown, not interpreted)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def iso(ts_values) -> list[str]:
    """Epoch seconds as ISO strings, which Plotly draws on a date axis."""
    return [datetime.fromtimestamp(float(t), timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f") for t in ts_values]


def time_layout(title: str, y_title: str, **extra) -> dict:
    return {"title": {"text": title}, "xaxis": {"type": "date", "title": {"text": "time (UTC)"}},
            "yaxis": {"title": {"text": y_title}, "rangemode": "tozero"}, **extra}


def sampled_steps(wide: pd.DataFrame) -> pd.DataFrame:
    """A wide step function (`ts` and one column per line) at `MAX_POINTS` evenly spaced
    instants when it has more rows, else itself: what `steps_figure` draws."""
    if len(wide) <= MAX_POINTS:
        return wide
    return sample_steps(wide.assign(run_id="run"), MAX_POINTS).drop(columns=["run_id"]).reset_index(drop=True)


def steps_figure(wide: pd.DataFrame, title: str, y_title: str) -> dict:
    """Step lines from a wide step function (`ts` and one column per line, the value holding
    until the next row), sampled to `MAX_POINTS` instants when longer."""
    if wide.empty:
        return {"data": [], "layout": time_layout(title, y_title)}
    wide = sampled_steps(wide)
    x = iso(wide.ts)
    data = [{"type": "scatter", "mode": "lines", "line": {"shape": "hv"}, "name": plot_text(column),
             "x": x, "y": wide[column].tolist()}
            for column in wide.columns if column not in ("ts", "run_id", "step")]
    return {"data": data, "layout": time_layout(title, y_title)}


def bar_figure(x: list, series: dict[str, list], title: str, y_title: str, stacked: bool = True) -> dict:
    data = [{"type": "bar", "name": plot_text(name), "x": [plot_text(v) for v in x], "y": values}
            for name, values in series.items()]
    return {"data": data, "layout": {"title": {"text": title}, "barmode": "stack" if stacked else "group",
                                     "yaxis": {"title": {"text": y_title}}}}


def histogram_figure(bins: pd.DataFrame, title: str, x_title: str) -> dict:
    """Bars from server-side bins (`low`, `high`, `count`)."""
    data = [{"type": "bar", "x": ((bins.low + bins.high) / 2).tolist(), "y": bins["count"].tolist(),
             "width": (bins.high - bins.low).tolist(), "name": "tasks"}] if not bins.empty else []
    return {"data": data, "layout": {"title": {"text": title}, "bargap": 0.02,
                                     "xaxis": {"title": {"text": x_title}}, "yaxis": {"title": {"text": "tasks"}}}}


def waterfall_figure(steps: pd.DataFrame) -> dict:
    """The common path as a waterfall: each step's mean time since the step before it."""
    if steps.empty:
        return {"data": [], "layout": {"title": {"text": "common path"}}}
    since_first = steps.since_first_mean.fillna(0)
    increments = since_first.diff().fillna(since_first.iloc[0]).clip(lower=0)
    labels = [f"{i}. {plot_text(label)[:90]}" for i, label in zip(steps.position, steps.label)]
    data = [{"type": "waterfall", "orientation": "h", "y": labels, "x": increments.tolist(),
             "measure": ["relative"] * len(labels), "connector": {"visible": False},
             "hovertemplate": "%{y}<br>+%{x:.6f} s<extra></extra>"}]
    layout = {"title": {"text": "common path: mean time since the task's first step"},
              "yaxis": {"autorange": "reversed", "automargin": True, "tickfont": {"size": 10}},
              "xaxis": {"title": {"text": "seconds"}}, "margin": {"l": 20}}
    return {"data": data, "layout": layout}


def gantt_figure(stages: pd.DataFrame, title: str) -> dict:
    """Horizontal bars, one per stage (`label`, `start_ts`, `end_ts`, `group`)."""
    data = []
    for group, rows in stages.groupby("group", sort=False):
        data.append({"type": "bar", "orientation": "h", "name": plot_text(group),
                     "y": [plot_text(v) for v in rows.label], "base": iso(rows.start_ts),
                     "x": ((rows.end_ts - rows.start_ts) * 1000).round(3).tolist(),
                     "hovertemplate": "%{y}: %{x} ms<extra></extra>"})
    layout = {"title": {"text": title}, "barmode": "overlay",
              "xaxis": {"type": "date", "title": {"text": "time (UTC)"}},
              "yaxis": {"autorange": "reversed", "automargin": True}}
    return {"data": data, "layout": layout}


def lines_figure(lines: dict[str, tuple[list, list]], title: str, x_title: str, y_title: str) -> dict:
    """One line per name (`name -> (x values, y values)`), with markers."""
    data = [{"type": "scatter", "mode": "lines+markers", "name": plot_text(name), "x": x, "y": y}
            for name, (x, y) in lines.items()]
    return {"data": data, "layout": {"title": {"text": title}, "xaxis": {"title": {"text": x_title}},
                                     "yaxis": {"title": {"text": y_title}, "rangemode": "tozero"}}}
