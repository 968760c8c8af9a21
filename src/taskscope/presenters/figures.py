"""Plotly figures as plain dicts (data + layout), built from small DataFrames the analyses
already aggregated: the web's charts (sent to plotly.js as JSON) and the CLI's `--plot` files
(written by `taskscope.plotting.save_figure`) alike.

Text that came from logs goes through `plot_text`: Plotly renders a few HTML tags in labels,
so `<` and `>` are sent as entities and show as themselves.
"""

from __future__ import annotations

import textwrap
from datetime import datetime, timezone

import pandas as pd

from taskscope.analyses.states import sampled_steps
from taskscope.presenters.format import missing, short_run_id, short_run_ids


#: one colour per task state, the same on every chart, the DAG and the badges: the Okabe-Ito
#: palette, which people with any common colour-vision deficiency tell apart (done green,
#: failed vermillion, dep_fail purple, unfinished grey); legends name the state beside its colour
STATE_COLOURS: dict[str, str] = {
    "exec_done": "#009E73", "memo_done": "#56B4E9", "failed": "#D55E00", "dep_fail": "#CC79A7",
    "unfinished": "#999999", "pending": "#F0E442", "launched": "#0072B2", "running": "#E69F00",
    "running_ended": "#000000", "fail_retryable": "#882255", "joining": "#44AA99", "unsched": "#DDDDDD",
}


def coloured(trace: dict, name) -> dict:
    """`trace` with its state's colour when `name` is a task state (else Plotly's own)."""
    colour = STATE_COLOURS.get(str(name))
    if colour is None:
        return trace
    key = "line" if trace.get("type") == "scatter" else "marker"
    return {**trace, key: {**trace.get(key, {}), "color": colour}}


def plot_text(text) -> str:
    """`text` safe to show as a Plotly label (its HTML-like markup shown, not interpreted)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


#: characters of a name from the logs (an app) shown in a legend; the whole name is in its tooltip
LEGEND_NAME_CHARS = 24


def legend_name(text) -> str:
    """`text` cut to `LEGEND_NAME_CHARS` with "…" (a legend entry as wide as a 300-character app
    name left the plot no room), safe as `plot_text` makes it.

    >>> legend_name("a" * 30)
    'aaaaaaaaaaaaaaaaaaaaaaa…'
    """
    text = str(text)
    return plot_text(text if len(text) <= LEGEND_NAME_CHARS else text[:LEGEND_NAME_CHARS - 1] + "…")


def wrapped_label(text, width: int = 90, lines: int = 2) -> str:
    """`text` as a Plotly tick label of at most `lines` lines of about `width` characters, broken
    at spaces (a word is never cut; what does not fit ends in "…"), safe as `plot_text` makes it.

    >>> wrapped_label("7. parsl: Parsl task <num> try <num> launched on executor htex_local with executor id", 34)
    '7. parsl: Parsl task &lt;num&gt; try<br>&lt;num&gt; launched on executor …'
    """
    parts = textwrap.wrap(str(text), width, max_lines=lines, placeholder=" …", break_long_words=False,
                          break_on_hyphens=False)
    return "<br>".join(plot_text(part) for part in parts)


def iso(ts_values) -> list[str]:
    """Epoch seconds as ISO strings, which Plotly draws on a date axis."""
    return [datetime.fromtimestamp(float(t), timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f") for t in ts_values]


def time_layout(title: str, y_title: str, **extra) -> dict:
    return {"title": {"text": title}, "xaxis": {"type": "date", "title": {"text": "time (UTC)"}},
            "yaxis": {"title": {"text": y_title}, "rangemode": "tozero"}, **extra}


def throughput_figure(throughput: pd.DataFrame, span: tuple[float, float] | None = None) -> dict:
    """Stacked bars of tasks completed per second, one colour per app, over time (the
    `throughput` frame of `taskscope.analyses.summary`); `span` (epoch seconds) fixes the time
    axis, e.g. to the run's, as the charts beside it show it.

    >>> throughput_figure(summary(store).throughput, span=(run.start_ts, run.end_ts))  # doctest: +SKIP
    """
    # each bar as wide as its bin (ms on a date axis): Plotly would guess a width from the
    # spacing of the bars, and a lone bar would get a width of a millisecond
    data = [{"type": "bar", "name": legend_name(app), "x": iso(rows.bin_start_ts + rows.bin_s / 2),
             "y": rows.per_s.tolist(), "width": (rows.bin_s * 1000).tolist(),
             "hovertemplate": plot_text(app) + "<br>%{x}<br>%{y} tasks/s<extra></extra>"}
            for app, rows in throughput.groupby("app_name")]
    layout = time_layout("throughput: tasks completed per second", "tasks / s", barmode="stack", bargap=0)
    if span is not None and not any(missing(t) for t in span):
        layout["xaxis"]["range"] = iso(span)
    return {"data": data, "layout": layout}


def resource_samples_figure(samples: pd.DataFrame) -> dict:
    """A task's resource samples over time, one line per try: resident memory (MiB, left axis)
    and CPU time (user + system) since the try's first sample (seconds, right axis; Parsl's
    samples are the worker process's running totals, so the first sample of a try is its zero)."""
    data = []
    for try_id, rows in samples.groupby(samples.try_id.fillna(-1), sort=True):
        name = "" if try_id == -1 else f"try {int(try_id)}: "
        x = iso(rows.ts)
        data.append({"type": "scatter", "mode": "lines+markers", "name": f"{name}resident memory (MiB)", "x": x,
                     "y": rows.memory_resident_mib.tolist()})
        data.append({"type": "scatter", "mode": "lines+markers", "name": f"{name}CPU time since first sample (s)",
                     "x": x, "y": rows.cpu_since_first_s.tolist(), "yaxis": "y2"})
    layout = time_layout("resource samples", "MiB",
                         yaxis2={"title": {"text": "seconds"}, "overlaying": "y", "side": "right",
                                 "rangemode": "tozero"})
    return {"data": data, "layout": layout}


def steps_figure(wide: pd.DataFrame, title: str, y_title: str) -> dict:
    """Step lines from a wide step function (`ts` and one column per line, the value holding
    until the next row), sampled to `taskscope.analyses.states.MAX_POINTS` instants when longer."""
    if wide.empty:
        return {"data": [], "layout": time_layout(title, y_title)}
    wide = sampled_steps(wide)
    x = iso(wide.ts)
    data = [coloured({"type": "scatter", "mode": "lines", "line": {"shape": "hv"}, "name": plot_text(column),
                      "x": x, "y": wide[column].tolist()}, column)
            for column in wide.columns if column not in ("ts", "run_id", "step")]
    return {"data": data, "layout": time_layout(title, y_title)}


def bar_figure(x: list, series: dict[str, list], title: str, y_title: str, stacked: bool = True) -> dict:
    data = [coloured({"type": "bar", "name": plot_text(name), "x": [plot_text(v) for v in x], "y": values}, name)
            for name, values in series.items()]
    return {"data": data, "layout": {"title": {"text": title}, "barmode": "stack" if stacked else "group",
                                     "yaxis": {"title": {"text": y_title}}}}


def histogram_figure(bins: pd.DataFrame, title: str, x_title: str, counted: str = "tasks") -> dict:
    """Bars from server-side bins (`low`, `high`, `count`); `counted` names what a bar counts."""
    data = [{"type": "bar", "x": ((bins.low + bins.high) / 2).tolist(), "y": bins["count"].tolist(),
             "width": (bins.high - bins.low).tolist(), "name": counted}] if not bins.empty else []
    return {"data": data, "layout": {"title": {"text": title}, "bargap": 0.02,
                                     "xaxis": {"title": {"text": x_title}}, "yaxis": {"title": {"text": counted}}}}


def waterfall_figure(steps: pd.DataFrame) -> dict:
    """The common path as a waterfall: each step's mean time since the step before it."""
    if steps.empty:
        return {"data": [], "layout": {"title": {"text": "common path"}}}
    since_first = steps.since_first_mean.fillna(0)
    increments = since_first.diff().fillna(since_first.iloc[0]).clip(lower=0)
    full = [f"{i}. {label}" for i, label in zip(steps.position, steps.label)]
    labels = [plot_text(label) for label in full]  # whole, on hover; wrapped on the axis
    data = [{"type": "waterfall", "orientation": "h", "y": labels, "x": increments.tolist(),
             "measure": ["relative"] * len(labels), "connector": {"visible": False},
             "hovertemplate": "%{y}<br>+%{x:.6f} s<extra></extra>"}]
    layout = {"title": {"text": "common path: mean time since the task's first step"},
              "yaxis": {"autorange": "reversed", "automargin": True, "tickfont": {"size": 10},
                        "tickmode": "array", "tickvals": labels, "ticktext": [wrapped_label(t) for t in full]},
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


# ---------------------------------------------------------------------------------------------
# figures over seconds since each run's start (the CLI's --plot; runs overlay in one chart)

#: colours of the stages (the source of a step) in the path and bottleneck charts
STAGE_COLOURS = {"parsl": "#1f77b4", "interchange": "#ff7f0e", "manager": "#2ca02c", "worker": "#d62728",
                 "monitoring": "#9467bd"}
#: colours of the lines of a chart, in order (Plotly's own)
LINE_COLOURS = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880",
                "#ff97ff", "#fecb52"]
#: dashes that tell runs apart when several share a chart
RUN_DASHES = ["solid", "dot", "dash", "longdash", "dashdot", "longdashdot"]


def elapsed(frame: pd.DataFrame, column: str = "ts") -> pd.Series:
    """Seconds since each run's first row (so that runs overlay in one chart).

    >>> elapsed(pd.DataFrame({"run_id": ["a", "a", "b"], "ts": [10.0, 12.5, 3.0]})).tolist()
    [0.0, 2.5, 0.0]
    """
    return frame[column] - frame.groupby("run_id")[column].transform("min")


def run_lines_figure(frame: pd.DataFrame, y: str, color: str | None, title: str, x_title: str, y_title: str,
                     steps: bool = False) -> dict:
    """One line per value of `color` (and per run, dashed apart when there are several), `y`
    over seconds since its run's first row; `steps`: the value holds until the next row."""
    frame = frame.assign(elapsed_s=elapsed(frame))
    runs = list(dict.fromkeys(frame.run_id))
    names = list(dict.fromkeys(frame[color])) if color else [y]
    data = []
    for keys, rows in frame.groupby(["run_id"] + ([color] if color else []), sort=False):
        run_id = keys[0]
        name = keys[1] if color else y
        line_colour = STATE_COLOURS.get(str(name), LINE_COLOURS[names.index(name) % len(LINE_COLOURS)])
        trace = {"type": "scatter", "mode": "lines" if steps else "lines+markers",
                 "name": plot_text(name if len(runs) == 1 else f"{name} {short_run_id(run_id)}"),
                 "x": rows.elapsed_s.tolist(), "y": rows[y].tolist(),
                 "line": {"color": line_colour, "dash": RUN_DASHES[runs.index(run_id) % len(RUN_DASHES)]}}
        if steps:
            trace["line"]["shape"] = "hv"
        data.append(trace)
    return {"data": data, "layout": {"title": {"text": plot_text(title)}, "xaxis": {"title": {"text": x_title}},
                                     "yaxis": {"title": {"text": y_title}, "rangemode": "tozero"}}}


def run_steps_figure(frame: pd.DataFrame, y: str, color: str | None, title: str, y_title: str) -> dict:
    """Step lines (the value holds until the next change) of a long step function (`run_id`,
    `ts`, `y`, and `color` naming the line), each spanning its whole run."""
    whole = whole_run_steps(frame[["run_id", "ts", y] + ([color] if color else [])], y, color)
    return run_lines_figure(whole, y, color, title, "seconds since the run's first change", y_title, steps=True)


def whole_run_steps(frame: pd.DataFrame, y: str, color: str | None) -> pd.DataFrame:
    """The change rows of each line, plus a 0 at its run's first change (before its own first
    change nothing was in it) and its last value held to the run's last change, so that every
    line spans the run instead of starting and stopping at its own changes."""
    keys = ["run_id"] + ([color] if color else [])
    ordered = frame.sort_values("ts", kind="stable")
    span = ordered.groupby("run_id").ts.agg(["min", "max"])
    starts = ordered.groupby(keys, sort=False).head(1)
    starts = starts[starts.ts > starts.run_id.map(span["min"])]
    starts = starts.assign(ts=starts.run_id.map(span["min"]), **{y: 0})
    ends = ordered.groupby(keys, sort=False).tail(1)
    ends = ends.assign(ts=ends.run_id.map(span["max"]))
    return pd.concat([starts, ordered, ends], ignore_index=True).sort_values("ts", kind="stable")


def values_histogram_figure(values: pd.DataFrame, x: str, by: str | None, bins: int, title: str,
                            x_title: str) -> dict:
    """A histogram of column `x` in about `bins` bins, one stacked colour per value of `by`."""
    values = values.dropna(subset=[x])
    groups = values.groupby(by, sort=False) if by else [(x, values)]
    data = [{"type": "histogram", "name": plot_text(name), "x": rows[x].tolist(), "nbinsx": bins,
             "marker": {"color": LINE_COLOURS[i % len(LINE_COLOURS)]}}
            for i, (name, rows) in enumerate(groups)]
    return {"data": data, "layout": {"title": {"text": plot_text(title)}, "barmode": "stack", "bargap": 0.05,
                                     "xaxis": {"title": {"text": x_title}}, "yaxis": {"title": {"text": "count"}}}}


def summary_figure(apps: pd.DataFrame, throughput: pd.DataFrame, runs: pd.DataFrame, states: list[str]) -> dict:
    """Two charts: tasks per app by final state (top); tasks completed per second over
    seconds since each run's first submit (bottom). Frames as `taskscope.analyses.summary` gives."""
    several_runs = apps.run_id.nunique() > 1
    labels = [plot_text(label) for label in (short_run_ids(apps.run_id) + " " if several_runs else "") + apps.app_name]
    data = [coloured({"type": "bar", "name": state, "x": labels, "y": apps[state].tolist(), "xaxis": "x", "yaxis": "y"},
                      state)
            for state in states if state in apps and apps[state].any()]
    if not throughput.empty:
        start = throughput.run_id.map(runs.set_index("run_id").first_submit_ts)
        with_elapsed = throughput.assign(elapsed_s=throughput.bin_start_ts - start)
        for (run_id, app), rows in with_elapsed.groupby(["run_id", "app_name"]):
            data.append({"type": "bar", "x": (rows.elapsed_s + rows.bin_s / 2).tolist(), "y": rows.per_s.tolist(),
                         "width": rows.bin_s.tolist(), "xaxis": "x2", "yaxis": "y2",
                         "name": plot_text((f"{short_run_id(run_id)} " if several_runs else "") + f"{app} completed")})
    layout = {"title": {"text": "summary"}, "barmode": "stack",
              "xaxis": {"anchor": "y"}, "yaxis": {"domain": [0.575, 1.0], "anchor": "x"},
              "xaxis2": {"anchor": "y2", "title": {"text": "seconds since the run's first submit"}},
              "yaxis2": {"domain": [0.0, 0.425], "anchor": "x2"},
              "annotations": [_subplot_title("tasks per app by final state", 1.0),
                              _subplot_title("tasks completed per second", 0.425)]}
    return {"data": data, "layout": layout}


def _subplot_title(text: str, top: float) -> dict:
    return {"text": text, "x": 0.5, "y": top, "xref": "paper", "yref": "paper", "xanchor": "center",
            "yanchor": "bottom", "showarrow": False, "font": {"size": 16}}


def path_figure(steps: pd.DataFrame, variant: int) -> dict:
    """A Gantt-like chart of a common-path variant's average task (`CommonPath.variant_steps`):
    one bar per step, from its mean time since the first event to the next step's."""
    starts = steps["since_first_mean"]
    ends = starts.shift(-1).fillna(starts)
    data = [{"type": "bar", "orientation": "h", "name": plot_text(source),
             "y": [plot_text(label) for label in group["label"]], "x": (ends - starts)[group.index].tolist(),
             "base": starts[group.index].tolist(), "marker": {"color": STAGE_COLOURS.get(source)},
             "hovertemplate": "%{y}<br>from %{base:.6f} s for %{x:.6f} s<extra></extra>"}
            for source, group in steps.groupby("source", sort=False)]
    layout = {"title": {"text": f"Average task of variant {variant} ({int(steps['tasks'].max())} tasks)"},
              "xaxis": {"title": {"text": "seconds since the task's first event"}}, "barmode": "overlay",
              "yaxis": _categories(steps["label"]), "height": max(400, 28 * len(steps) + 150)}
    return {"data": data, "layout": layout}


def bottlenecks_figure(steps: pd.DataFrame, run_id: str) -> dict:
    """Horizontal bars: total time tasks waited in each step (`Bottlenecks.steps`), longest on
    top, coloured by stage."""
    data = [{"type": "bar", "orientation": "h", "name": plot_text(group["stage"].iloc[0]),
             "y": [plot_text(label) for label in group["label"]], "x": group["wait_total_s"].tolist(),
             "marker": {"color": STAGE_COLOURS.get(source)}}
            for source, group in steps.groupby("source", sort=False)]
    layout = {"title": {"text": f"Time tasks wait in each step (run {run_id})"},
              "xaxis": {"title": {"text": "seconds, summed over tasks"}}, "yaxis": _categories(steps["label"]),
              "height": max(400, 28 * len(steps) + 150)}
    return {"data": data, "layout": layout}


def compare_figure(frame: pd.DataFrame, run_a: str, run_b: str) -> dict:
    """Before/after bars of the median time in each stage and of the task duration (log scale),
    from `taskscope.analyses.compare.compare`."""
    latency = frame[frame["unit"] == "s"]
    steps = [plot_text(step) for step in latency["step"]]
    data = [{"type": "bar", "orientation": "h", "y": steps, "x": latency["median_a"].tolist(),
             "name": plot_text(f"A: {run_a}")},
            {"type": "bar", "orientation": "h", "y": steps, "x": latency["median_b"].tolist(),
             "name": plot_text(f"B: {run_b}")}]
    layout = {"title": {"text": "Median time in stage, before (A) and after (B)"}, "barmode": "group",
              "xaxis": {"type": "log", "title": {"text": "seconds (log scale)"}}, "yaxis": _categories(latency["step"]),
              "height": max(400, 40 * len(latency) + 150)}
    return {"data": data, "layout": layout}


def _categories(labels: pd.Series) -> dict:
    """A y axis listing `labels` top to bottom in their order."""
    return {"categoryorder": "array", "categoryarray": [plot_text(label) for label in labels][::-1],
            "automargin": True}
