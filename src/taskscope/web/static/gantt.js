// Draws the run's Gantt (SVG) from the data the server embedded (#gantt-data, see
// taskscope.analyses.gantt): one bar per task with its stages, or, aggregated, one row per app or
// worker slot with the mean number of its tasks in each stage over time (stacked areas).
// Every text comes from data: it is set as text content, never parsed as markup.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  // read anew at each draw: live.js swaps in the page's fresh <main> while the run is live
  var node, box, data, run, stages, tryStages, colours;
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

  // a retried task's earlier tries, per task: [{try_id, row, slot, <stage>_start, <stage>_end}]
  function earlierTries() {
    var e = data.tries || { task: [] }, byTask = {};
    for (var k = 0; k < e.task.length; k++) {
      var one = { try_id: e.try_id[k], row: e.row[k], slot: e.slot[k] };
      tryStages.forEach(function (s) { one[s + "_start"] = e[s + "_start"][k]; one[s + "_end"] = e[s + "_end"][k]; });
      (byTask[e.task[k]] = byTask[e.task[k]] || []).push(one);
    }
    return byTask;
  }

  function drawTasks() {
    var t = data.tasks, n = t.task_id.length, rows = data.rows;
    var bySlot = data.by === "slot";
    var drawn = bySlot ? ["running"] : stages;
    var tries = earlierTries();
    var t0 = Infinity, t1 = -Infinity;
    function widen(a, b) { if (a !== null) { t0 = Math.min(t0, a); t1 = Math.max(t1, b); } }
    for (var i = 0; i < n; i++) {
      drawn.forEach(function (s) { widen(t[s + "_start"][i], t[s + "_end"][i]); });
      (tries[i] || []).forEach(function (one) { widen(one.running_start, one.running_end); });
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
    function rect(parent, s, a, b, y, h, fill, extra) {
      el("rect", Object.assign({ x: x(a), y: y, width: Math.max(1, x(b) - x(a)), height: h, fill: fill, class: "stage",
                                 "data-stage": s, "data-start": a, "data-end": b }, extra || {}), parent);
    }
    function link(i) {
      return el("a", { href: "/runs/" + encodeURIComponent(run) + "/tasks/" + encodeURIComponent(t.task_id[i]) }, null);
    }
    for (i = 0; i < n; i++) {
      var y = AXIS + t.row[i] * rowH + 1, h = Math.max(1, rowH - 2), parts = [], retried = 0;
      var anchor = link(i);
      var bar = el("g", { class: "task-bar", "data-task": t.task_id[i], "data-state": t.state[i] }, anchor);
      var end = null;
      drawn.forEach(function (s) {
        var a = t[s + "_start"][i], b = t[s + "_end"][i];
        if (a === null || t.row[i] === null) { return; }  // per slot: no row for a task that never ran on a worker
        rect(bar, s, a, b, y, h, bySlot ? colour(t.state[i]) : colour(s));
        parts.push(s + " " + seconds(b - a));
        end = b;
      });
      (tries[i] || []).forEach(function (one) {
        var held = [], first = null, last = null;
        tryStages.forEach(function (s) {
          var a = one[s + "_start"], b = one[s + "_end"];
          if (a === null) { return; }
          first = first === null ? a : first;
          last = b;
          held.push(s + " " + seconds(b - a));
        });
        if (first === null) { return; }
        retried += last - first;
        var label = "try " + one.try_id + " (retried, slot " + one.slot + "): " + held.join(", ");
        if (bySlot) {  // its running time in the slot it ran in, coloured as the failure it was
          if (one.running_start === null || one.row === null) { return; }
          var own = el("g", { class: "try-bar", "data-task": t.task_id[i], "data-try": one.try_id }, link(i));
          rect(own, "running", one.running_start, one.running_end, AXIS + one.row * rowH + 1, h, colour("failed"));
          el("title", {}, own).textContent = "task " + t.task_id[i] + " " + label;
          svg.appendChild(own.parentNode);
          states.failed = true;
          return;
        }
        var group = el("g", { class: "try-bar", "data-try": one.try_id }, bar);
        tryStages.forEach(function (s) {
          if (one[s + "_start"] !== null) { rect(group, s, one[s + "_start"], one[s + "_end"], y, h, colour(s)); }
        });
        el("rect", { x: x(last) - 1, y: y, width: 3, height: h, fill: colour("failed"), class: "try-end" }, group);
        parts.push(label);
      });
      if (end === null) { continue; }  // per slot: the task never ran on a worker
      if (!t.open[i] && !bySlot) {
        el("rect", { x: x(end) - 1, y: y, width: 3, height: h, fill: colour(t.state[i]), class: "final" }, bar);
      }
      if (retried > 0 && !bySlot && t.pending_start[i] !== null) {  // the wait is pending only outside the tries
        parts[0] = "pending " + seconds(t.pending_end[i] - t.pending_start[i] - retried);
      }
      states[t.state[i]] = true;
      var title = el("title", {}, bar);
      title.textContent = "task " + t.task_id[i] + (t.app[i] ? " (" + t.app[i] + ")" : "") + ", " + t.state[i] +
        (t.open[i] ? " (not ended)" : "") + ", slot " + t.slot[i] + ": " + parts.join(", ");
      svg.appendChild(anchor);
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
    tryStages = stages.slice(1);  // an earlier try: launched and running (see analyses/gantt.py TRY_STAGES)
    colours = JSON.parse(document.getElementById("state-colours").textContent);
    if (data.mode === "aggregated") { drawAggregated(); } else { drawTasks(); }
  }

  draw();
  document.addEventListener("taskscope:refreshed", draw);  // see live.js
})();
