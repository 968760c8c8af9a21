// Draws every chart whose Plotly figure the server embedded as JSON
// (<script type="application/json" class="figure" data-target="ID">).
(function () {
  "use strict";
  function draw() {
    if (typeof Plotly === "undefined") { return; }
    document.querySelectorAll("script.figure").forEach(function (node) {
      var target = document.getElementById(node.dataset.target);
      if (!target) { return; }
      var figure = JSON.parse(node.textContent);
      var layout = Object.assign({ margin: { l: 60, r: 20, t: 30, b: 45 } }, figure.layout || {});
      legendBelow(layout);
      Plotly.newPlot(target, figure.data || [], layout, { responsive: true, displaylogo: false });
    });
  }
  // A chart with an axis on the right makes room for that axis's labels and keeps its legend
  // below the plot, off them.
  function legendBelow(layout) {
    var rightAxis = Object.keys(layout).filter(function (key) {
      return /^yaxis[0-9]*$/.test(key) && layout[key] && layout[key].side === "right";
    });
    rightAxis.forEach(function (key) { layout[key] = Object.assign({ automargin: true }, layout[key]); });
    if (rightAxis.length && !layout.legend) {
      layout.legend = { orientation: "h", x: 0, xanchor: "left", y: -0.3, yanchor: "top" };
    }
  }
  window.taskscopeDrawCharts = draw;  // live.js redraws after it swaps in a fresh page
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", draw); } else { draw(); }
})();
