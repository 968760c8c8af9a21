// While the page shows something live (<body data-live="1">, set by the server while it ingests a
// run that is still logging), fetch the page again every ingest interval and swap in its <main>
// and status badge, redrawing the charts and telling the page's own scripts ("taskscope:refreshed",
// the Gantt draws the fresh data); stop once the server says nothing on it is live, after one more
// refresh (the page that first says so may have been made while the last ingest was finishing).
// The fetched page is the server's own escaped HTML, parsed inert (its scripts do not run).
(function () {
  "use strict";
  var body = document.body;
  if (body.dataset.live !== "1") { return; }
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
        swap("main", page);
        swap("header .ingest", page);
        if (window.taskscopeDrawCharts) { window.taskscopeDrawCharts(); }
        // for the page's own scripts that draw from its data (the Gantt): draw the fresh <main>
        document.dispatchEvent(new CustomEvent("taskscope:refreshed"));
        var live = page.body.dataset.live || "0";
        if (live === "1") {
          lastRefreshDone = false;
        } else if (!lastRefreshDone) {
          lastRefreshDone = true;
          live = "1";  // not live any more: one last refresh, then stop
        }
        body.dataset.live = live;
      })
      .catch(function () { /* the server is busy or gone: try again at the next interval */ })
      .then(function () { if (body.dataset.live === "1") { window.setTimeout(refresh, interval); } });
  }
  window.setTimeout(refresh, interval);
})();
