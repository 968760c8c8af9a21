// While the server ingests (<body data-watching="1">), fetch the page again every ingest interval
// and swap in its <main> and status badge when an ingest added events since the page was made
// (data-generation), so a page opened before its run existed follows it; while the page shows
// something live (data-live="1", a run still logging) swap at every interval. After a swap, redraw
// the charts and tell the page's own scripts ("taskscope:refreshed", the Gantt draws the fresh
// data). A live page that the server says is live no more gets one more swap (the page that first
// says so may have been made while the last ingest was finishing); polling stops once the server
// ingests no more. The fetched page is the server's own escaped HTML, parsed inert (its scripts do
// not run).
(function () {
  "use strict";
  var body = document.body;
  if (body.dataset.live !== "1" && body.dataset.watching !== "1") { return; }
  var interval = Math.max(1000, 1000 * parseFloat(body.dataset.interval || "3"));
  var lastRefreshDone = false;

  function swap(selector, from) {
    var fresh = from.querySelector(selector), current = document.querySelector(selector);
    if (fresh && current) { current.replaceWith(document.importNode(fresh, true)); }
  }

  function refresh() {
    fetch(window.location.href, { headers: { Accept: "text/html" }, cache: "no-store" })
      .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
      .then(function (text) {
        var page = new DOMParser().parseFromString(text, "text/html");
        var fresh = page.body.dataset;
        swap("header .ingest", page);
        if (body.dataset.live === "1" || fresh.generation !== body.dataset.generation) {
          swap("main", page);
          if (window.taskscopeDrawCharts) { window.taskscopeDrawCharts(); }
          // for the page's own scripts that draw from its data (the Gantt): draw the fresh <main>
          document.dispatchEvent(new CustomEvent("taskscope:refreshed"));
        }
        var live = fresh.live || "0";
        if (live === "1") {
          lastRefreshDone = false;
        } else if (body.dataset.live === "1" && !lastRefreshDone) {
          lastRefreshDone = true;
          live = "1";  // not live any more: one last refresh
        }
        body.dataset.live = live;
        body.dataset.watching = fresh.watching || "0";
        body.dataset.generation = fresh.generation || "";
      })
      .catch(function () { /* the server is busy or gone: try again at the next interval */ })
      .then(function () {
        if (body.dataset.live === "1" || body.dataset.watching === "1") { window.setTimeout(refresh, interval); }
      });
  }
  window.setTimeout(refresh, interval);
})();
