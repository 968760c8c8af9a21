// Draws the run's Gantt (SVG) from the data the server embedded (#gantt-data, see
// taskscope.analyses.gantt): one bar per task with its stages, or, aggregated, one row per app or
// worker slot with the mean number of its tasks in each stage over time (stacked areas).
// Every text comes from data: it is set as text content, never parsed as markup.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  // read anew at each draw: live.js swaps in the page's fresh <main> while the run is live
  var node, box, data, run, stages, colours;
  var LABEL = 160, AXIS = 26, RIGHT = 12;

  function el(name, attrs, parent) {
    var e = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function text(parent, x, y, value, attrs) {
    var t = el("text", Object.assign({ x: x, y: y }, attrs || {}), parent);
    t.textContent = value;
    return t;
  }
  function seconds(s) {
    if (s === null || s === undefined) { return "?"; }
    return s < 1 ? (s * 1000).toFixed(1) + " ms" : s.toFixed(3) + " s";
  }
  function clock(ts) { return new Date(ts * 1000).toISOString().slice(11, 23); }
  function colour(name) { return colours[name] || "#999999"; }

  function legend(names) {
    var holder = document.getElementById("gantt-legend");
    names.forEach(function (name) {
      var item = document.createElement("span");
      var dot = document.createElement("i");
      dot.style.background = colour(name);
      item.appendChild(dot);
      item.appendChild(document.createTextNode(name));
      holder.appendChild(item);
    });
  }

  // the time axis on top: ticks in seconds since t0
  function axis(svg, t0, t1, x, width) {
    var span = Math.max(t1 - t0, 1e-6), raw = span / 8, power = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (m) { return m * power; }).find(function (s) { return s >= raw; });
    for (var s = 0; s <= span + 1e-9; s += step) {
      el("line", { x1: x(t0 + s), x2: x(t0 + s), y1: AXIS - 4, y2: "100%", stroke: "#e5e5e5" }, svg);
      text(svg, x(t0 + s), AXIS - 8, "+" + Number(s.toPrecision(6)) + " s", { "text-anchor": "middle", "font-size": 10 });
    }
    text(svg, 4, 12, "since " + clock(t0) + " UTC", { "font-size": 10 });
    return width;
  }

  function scale(t0, t1, width) {
    var span = Math.max(t1 - t0, 1e-6), inner = width - LABEL - RIGHT;
    return function (t) { return LABEL + (t - t0) / span * inner; };
  }

  function drawTasks() {
    var t = data.tasks, n = t.task_id.length, rows = data.rows;
    var bySlot = data.by === "slot";
    var drawn = bySlot ? ["running"] : stages;
    var t0 = Infinity, t1 = -Infinity;
    for (var i = 0; i < n; i++) {
      drawn.forEach(function (s) {
        if (t[s + "_start"][i] !== null) { t0 = Math.min(t0, t[s + "_start"][i]); t1 = Math.max(t1, t[s + "_end"][i]); }
      });
    }
    if (!isFinite(t0)) { box.textContent = "No task has a known time."; return; }
    var rowH = rows.length <= 300 ? 16 : Math.max(3, Math.floor(4800 / rows.length));
    var width = Math.max(box.clientWidth, 600), height = AXIS + rows.length * rowH + 4;
    var svg = el("svg", { width: width, height: height, id: "gantt-svg", "font-family": "sans-serif" });
    var x = scale(t0, t1, width);
    axis(svg, t0, t1, x, width);
    if (rowH >= 10) {
      rows.forEach(function (label, r) {
        text(svg, LABEL - 6, AXIS + r * rowH + rowH * 0.75, label.length > 24 ? label.slice(0, 23) + "…" : label,
             { "text-anchor": "end", "font-size": Math.min(11, rowH - 3), class: "row-label" });
      });
    }
    var states = {};
    for (i = 0; i < n; i++) {
      var y = AXIS + t.row[i] * rowH + 1, h = Math.max(1, rowH - 2), parts = [];
      var link = el("a", { href: "/runs/" + encodeURIComponent(run) + "/tasks/" + encodeURIComponent(t.task_id[i]) }, null);
      var bar = el("g", { class: "task-bar", "data-task": t.task_id[i], "data-state": t.state[i] }, link);
      var end = null;
      drawn.forEach(function (s) {
        var a = t[s + "_start"][i], b = t[s + "_end"][i];
        if (a === null) { return; }
        var fill = bySlot ? colour(t.state[i]) : colour(s);
        el("rect", { x: x(a), y: y, width: Math.max(1, x(b) - x(a)), height: h, fill: fill, class: "stage",
                     "data-stage": s, "data-start": a, "data-end": b }, bar);
        parts.push(s + " " + seconds(b - a));
        end = b;
      });
      if (end === null) { continue; }  // per slot: the task never ran on a worker
      if (!t.open[i] && !bySlot) {
        el("rect", { x: x(end) - 1, y: y, width: 3, height: h, fill: colour(t.state[i]), class: "final" }, bar);
      }
      states[t.state[i]] = true;
      var title = el("title", {}, bar);
      title.textContent = "task " + t.task_id[i] + (t.app[i] ? " (" + t.app[i] + ")" : "") + ", " + t.state[i] +
        (t.open[i] ? " (not ended)" : "") + ", slot " + t.slot[i] + ": " + parts.join(", ");
      svg.appendChild(link);
    }
    box.appendChild(svg);
    legend((bySlot ? [] : drawn).concat(Object.keys(states).sort()));
  }

  // one stacked area per stage: its mean number of tasks in each bin, scaled to the row's peak
  function drawAggregated() {
    var groups = data.groups, bins = data.bins, rowH = 30;
    var t0 = data.start_ts, t1 = data.start_ts + bins * data.bin_s;
    var width = Math.max(box.clientWidth, 600), height = AXIS + groups.length * rowH + 4;
    var svg = el("svg", { width: width, height: height, id: "gantt-svg", "font-family": "sans-serif" });
    var x = scale(t0, t1, width);
    axis(svg, t0, t1, x, width);
    var states = {};
    groups.forEach(function (g, r) {
      var top = AXIS + r * rowH + 2, h = rowH - 4, peak = 0, totals = [];
      for (var b = 0; b < bins; b++) {
        totals[b] = stages.reduce(function (sum, s) { return sum + g[s][b]; }, 0);
        peak = Math.max(peak, totals[b]);
      }
      var row = el("g", { class: "group-row", "data-label": g.label, "data-tasks": g.tasks }, svg);
      var label = g.label.length > 22 ? g.label.slice(0, 21) + "…" : g.label;
      var holder = row;
      if (data.group_by === "app") {
        holder = el("a", { href: "?app=" + encodeURIComponent(g.label) }, row);
        el("rect", { x: 0, y: top, width: LABEL - 4, height: h, fill: "transparent" }, holder);  // the whole label clicks
      }
      text(holder, LABEL - 6, top + h * 0.45, label, { "text-anchor": "end", "font-size": 11 });
      text(holder, LABEL - 6, top + h * 0.95, g.tasks + " tasks", { "text-anchor": "end", "font-size": 9, fill: "#666" });
      var below = new Array(bins).fill(0), peaks = [];
      stages.forEach(function (s) {
        var upper = [], lower = [];
        for (var b = 0; b < bins; b++) {
          var lo = below[b], hi = lo + g[s][b];
          below[b] = hi;
          var xa = x(t0 + b * data.bin_s), xb = x(t0 + (b + 1) * data.bin_s);
          upper.push(xa + "," + (top + h - hi / (peak || 1) * h), xb + "," + (top + h - hi / (peak || 1) * h));
          lower.unshift(xb + "," + (top + h - lo / (peak || 1) * h), xa + "," + (top + h - lo / (peak || 1) * h));
        }
        el("path", { d: "M" + upper.join("L") + "L" + lower.join("L") + "Z", fill: colour(s), class: "stage-area",
                     "data-stage": s }, row);
        peaks.push(s + " up to " + Math.max.apply(null, g[s]).toFixed(1));
      });
      Object.keys(g.states).forEach(function (s) { states[s] = true; });
      var title = el("title", {}, row);
      title.textContent = g.label + ": " + g.tasks + " tasks (" + Object.keys(g.states).map(function (s) {
        return g.states[s] + " " + s; }).join(", ") + "); mean tasks per " + seconds(data.bin_s) + ": " + peaks.join(", ");
    });
    box.appendChild(svg);
    legend(stages);
  }

  function draw() {
    node = document.getElementById("gantt-data");
    box = document.getElementById("gantt");
    if (!node || !box || box.firstChild) { return; }  // no Gantt, or drawn already
    data = JSON.parse(node.textContent);
    run = node.dataset.run;
    stages = JSON.parse(document.getElementById("gantt-stages").textContent);
    colours = JSON.parse(document.getElementById("state-colours").textContent);
    if (data.mode === "aggregated") { drawAggregated(); } else { drawTasks(); }
  }

  draw();
  document.addEventListener("taskscope:refreshed", draw);  // see live.js
})();
