// The log explorer: the "add filter" pair (column, value) becomes one query parameter COLUMN=VALUE;
// the chosen columns one `cols` parameter (none while they are the default); a click on a row
// (not on a link) opens, below it, all of the event's columns (each a link that adds it to the
// filters, keeping the text search) and its attrs, from the JSON the server put in the row's
// data-detail attribute. Every value goes in through textContent or an attribute, never as markup.
(function () {
  "use strict";
  var form = document.getElementById("log-search");
  if (!form) { return; }

  function hidden(name, value) {
    var input = document.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = value;
    form.appendChild(input);
  }

  form.addEventListener("submit", function () {
    var column = document.getElementById("add-column");
    var value = document.getElementById("add-value");
    column.disabled = true;  // never sent as `_column`
    if (value.value !== "") { hidden(column.value, value.value); }
    var boxes = form.querySelectorAll("input[name=cols]");
    var chosen = [];
    boxes.forEach(function (box) { if (box.checked) { chosen.push(box.value); } box.disabled = true; });
    var joined = chosen.join(",");
    if (form.dataset.chosen || joined !== form.dataset.shown) { hidden("cols", joined); }
  });

  var table = document.getElementById("events");
  if (!table) { return; }
  var width = table.querySelectorAll("thead th").length;

  function filterUrl(column, value) {
    var params = new URLSearchParams(window.location.search);
    params.delete("page");
    params.set(column, value);
    return "/logs?" + params.toString();
  }

  function pairs(title, rows, linked) {
    var section = document.createElement("table");
    section.className = "kv";
    var caption = document.createElement("caption");
    caption.textContent = title;
    section.appendChild(caption);
    rows.forEach(function (pair) {
      var tr = document.createElement("tr"), th = document.createElement("th"), td = document.createElement("td");
      th.textContent = pair[0];
      if (linked && pair[0] !== "ts") {
        var a = document.createElement("a");
        a.className = "filter";
        a.href = filterUrl(pair[0], pair[1]);
        a.title = "logs where " + pair[0] + " = " + pair[1];
        a.textContent = pair[1];
        td.appendChild(a);
      } else {
        td.textContent = pair[1];
      }
      tr.appendChild(th); tr.appendChild(td); section.appendChild(tr);
    });
    return section;
  }

  function detailRow(event) {
    var tr = document.createElement("tr"), td = document.createElement("td");
    tr.className = "detail";
    td.colSpan = width;
    var message = document.createElement("pre");
    message.className = "message";
    message.textContent = event.message;
    td.appendChild(message);
    var box = document.createElement("div");
    box.className = "detail-tables";
    box.appendChild(pairs("columns", event.columns, true));
    if (event.attrs.length) { box.appendChild(pairs("attrs", event.attrs, false)); }
    td.appendChild(box);
    tr.appendChild(td);
    return tr;
  }

  table.tBodies[0].addEventListener("click", function (click) {
    if (click.target.closest("a") || String(window.getSelection()) !== "") { return; }
    var row = click.target.closest("tr.event");
    if (!row) { return; }
    var next = row.nextElementSibling;
    if (next && next.classList.contains("detail")) {
      next.remove();
      row.classList.remove("open");
      return;
    }
    row.after(detailRow(JSON.parse(row.dataset.detail)));
    row.classList.add("open");
  });
})();
