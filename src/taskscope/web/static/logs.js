// The log explorer's "add filter" pair (column, value) becomes one query parameter COLUMN=VALUE.
(function () {
  "use strict";
  var form = document.getElementById("log-search");
  if (!form) { return; }
  form.addEventListener("submit", function () {
    var column = document.getElementById("add-column");
    var value = document.getElementById("add-value");
    column.disabled = true;  // never sent as `_column`
    if (value.value !== "") {
      var input = document.createElement("input");
      input.type = "hidden";
      input.name = column.value;
      input.value = value.value;
      form.appendChild(input);
    }
  });
})();
