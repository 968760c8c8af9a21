// Layered left-to-right layout of the DAG the server embedded (#dag-data), drawn as SVG: a
// task's layer is the length of the longest chain of dependencies before it.
// Every label goes in through textContent, never as markup.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#9d755d", "#72b7b2", "#eeca3b", "#ff9da6", "#bab0ac", "#e45756"];
  // the state palette every chart uses (taskscope.presenters.figures.STATE_COLOURS), from the page
  var palette = document.getElementById("state-colours");
  var STATE_COLOURS = palette ? JSON.parse(palette.textContent) : {};
  var source = document.getElementById("dag-data");
  var holder = document.getElementById("dag");
  if (!source || !holder) { return; }
  var dag = JSON.parse(source.textContent);
  var run = source.dataset.run;
  var appLevel = dag.level === "app";
  var DX = appLevel ? 220 : 90, DY = appLevel ? 70 : 16, R = appLevel ? 16 : 5, TOP = 36;
  var SUB = appLevel ? DX : 3 * R;  // between the sub-columns of a wrapped layer
  // as many rows as the box shows (it is at most 80 % of the window high)
  var ROWS = Math.max(appLevel ? 4 : 20, Math.floor((window.innerHeight * 0.8 - TOP - 30) / DY));

  function layers(nodes, edges) {
    var parents = {}, children = {}, indegree = {}, layer = {};
    nodes.forEach(function (n) { parents[n.id] = []; children[n.id] = []; indegree[n.id] = 0; layer[n.id] = 0; });
    edges.forEach(function (e) {
      if (!(e[0] in parents) || !(e[1] in parents)) { return; }
      children[e[0]].push(e[1]); parents[e[1]].push(e[0]); indegree[e[1]] += 1;
    });
    var queue = nodes.filter(function (n) { return indegree[n.id] === 0; }).map(function (n) { return n.id; });
    var seen = 0;
    while (queue.length) {
      var id = queue.shift(); seen += 1;
      children[id].forEach(function (c) {
        layer[c] = Math.max(layer[c], layer[id] + 1);
        indegree[c] -= 1;
        if (indegree[c] === 0) { queue.push(c); }
      });
    }
    return { layer: layer, parents: parents };
  }

  // Each layer is one column; a layer taller than the window wraps into sub-columns set close
  // together (SUB apart, against DX between layers) on a shaded band labelled with its size, so
  // 250 independent tasks read as one layer, not as a chain of five.
  function place(nodes, edges) {
    var info = layers(nodes, edges), byLayer = [], position = {}, bands = [], x = 40;
    nodes.forEach(function (n) { (byLayer[info.layer[n.id]] = byLayer[info.layer[n.id]] || []).push(n); });
    byLayer.forEach(function (members, index) {
      if (!members) { return; }
      members.forEach(function (n) {  // barycentre of parents' rows keeps edges short
        var rows = info.parents[n.id].map(function (p) { return position[p] ? position[p].row : 0; });
        n._order = rows.length ? rows.reduce(function (a, b) { return a + b; }, 0) / rows.length : 0;
      });
      members.sort(function (a, b) { return a._order - b._order; });
      var columns = Math.ceil(members.length / ROWS);
      members.forEach(function (n, i) {
        position[n.id] = { x: x + Math.floor(i / ROWS) * SUB, y: TOP + (i % ROWS) * DY, row: i % ROWS, layer: index };
      });
      if (columns > 1) { bands.push({ x: x, width: (columns - 1) * SUB, tasks: members.length, layer: index }); }
      x += (columns - 1) * SUB + DX;
    });
    return { position: position, bands: bands };
  }

  function colourMap(values, byState) {
    var map = {};
    values.forEach(function (v, i) { map[v] = (byState && STATE_COLOURS[v]) || PALETTE[i % PALETTE.length]; });
    return map;
  }

  function element(name, attributes) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attributes).forEach(function (k) { node.setAttribute(k, attributes[k]); });
    return node;
  }

  function mainState(n) {
    if (!appLevel) { return n.state; }
    return Object.keys(n.states).sort(function (a, b) { return n.states[b] - n.states[a]; })[0];
  }

  var layout = place(dag.nodes, dag.edges), position = layout.position;
  var width = 80, height = 80;
  Object.keys(position).forEach(function (k) {
    width = Math.max(width, position[k].x + (appLevel ? 200 : 60)); height = Math.max(height, position[k].y + 40);
  });
  var svg = element("svg", { width: width, height: height, viewBox: "0 0 " + width + " " + height });
  layout.bands.forEach(function (band) {
    svg.appendChild(element("rect", { "class": "layer", "data-layer": band.layer, x: band.x - R - 4, y: TOP - R - 6,
                                      width: band.width + 2 * R + 8, height: height - 40 - TOP + 2 * R + 12,
                                      rx: 6, fill: "#edf2f7", stroke: "#cbd5e0" }));
    var label = element("text", { x: band.x - R - 2, y: TOP - R - 10, fill: "#4a5568" });
    label.textContent = band.tasks + " tasks, one layer";
    svg.appendChild(label);
  });
  var edgeGroup = element("g", { stroke: "#a0aec0", "stroke-width": 1, fill: "none" });
  dag.edges.forEach(function (e) {
    var a = position[e[0]], b = position[e[1]];
    if (!a || !b) { return; }
    var mid = (a.x + b.x) / 2;
    edgeGroup.appendChild(element("path", { d: "M" + a.x + "," + a.y + " C" + mid + "," + a.y + " " + mid + "," + b.y + " " + b.x + "," + b.y }));
    if (appLevel) {
      var label = element("text", { x: mid, y: (a.y + b.y) / 2 - 3, fill: "#4a5568", stroke: "none" });
      label.textContent = String(e[2]);
      edgeGroup.appendChild(label);
    }
  });
  svg.appendChild(edgeGroup);
  var nodeGroup = element("g", {});
  var circles = [];
  dag.nodes.forEach(function (n) {
    var p = position[n.id];
    var link = element("a", { href: appLevel ? "/runs/" + encodeURIComponent(run) + "/dag?app=" + encodeURIComponent(n.id)
                                             : "/runs/" + encodeURIComponent(run) + "/tasks/" + encodeURIComponent(n.id) });
    var circle = element("circle", { cx: p.x, cy: p.y, r: R, stroke: "#2d3748", "stroke-width": 0.5, "data-layer": p.layer });
    circle.dataset.id = n.id;
    var title = element("title", {});
    title.textContent = appLevel
      ? n.id + ": " + n.tasks + " tasks (" + Object.keys(n.states).map(function (s) { return s + " " + n.states[s]; }).join(", ") + ")"
      : "task " + n.id + " (" + (n.app || "?") + "): " + n.state;
    circle.appendChild(title);
    link.appendChild(circle);
    if (appLevel) {
      var text = element("text", { x: p.x + R + 4, y: p.y + 4 });
      text.textContent = n.id + " (" + n.tasks + ")";
      link.appendChild(text);
    }
    nodeGroup.appendChild(link);
    circles.push({ node: n, circle: circle });
  });
  svg.appendChild(nodeGroup);
  holder.appendChild(svg);

  function colour(by) {
    var key = function (n) { return by === "app" ? (appLevel ? n.id : (n.app || "?")) : mainState(n); };
    var values = [];
    circles.forEach(function (c) { var v = key(c.node); if (values.indexOf(v) < 0) { values.push(v); } });
    values.sort();
    var map = colourMap(values, by === "state");
    circles.forEach(function (c) { c.circle.setAttribute("fill", map[key(c.node)]); });
    var legend = document.getElementById("dag-legend");
    legend.textContent = "";
    values.forEach(function (v) {
      var item = document.createElement("span"), dot = document.createElement("i");
      item.title = v;  // a long name is cut short on the line
      dot.style.background = map[v];
      item.appendChild(dot);
      item.appendChild(document.createTextNode(v));
      legend.appendChild(item);
    });
  }
  document.querySelectorAll("input[name=colour]").forEach(function (radio) {
    radio.addEventListener("change", function () { colour(radio.value); });
  });
  colour("app");
})();
