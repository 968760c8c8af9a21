// Submits a filter form as soon as one of its <select data-autosubmit> changes (the pages' CSP
// runs no inline handler such as onchange="...").
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    var field = event.target;
    if (field.matches && field.matches("select[data-autosubmit]") && field.form) { field.form.submit(); }
  });
})();
