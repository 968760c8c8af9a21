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
      Plotly.newPlot(target, figure.data || [], layout, { responsive: true, displaylogo: false });
    });
  }
  window.taskscopeDrawCharts = draw;  // live.js redraws after it swaps in a fresh page
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", draw); } else { draw(); }
})();
