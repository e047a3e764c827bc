// The errors list's selection: "select all" on the page, the count of selected errors, and the bulk buttons
// enabled only with a selection. Without this file the form still works: the server answers "Select at least
// one error." to an empty selection.
(function () {
  "use strict";

  function setUp() {
    var form = document.getElementById("bulk-form");
    if (!form) return;
    var all = document.getElementById("select-all");
    var count = document.getElementById("bulk-count");
    var boxes = Array.prototype.slice.call(form.querySelectorAll('input[type="checkbox"][name="ids"]'));
    var buttons = form.querySelectorAll("[data-needs-selection]");

    function refresh() {
      var chosen = boxes.filter(function (box) { return box.checked; }).length;
      count.textContent = chosen ? chosen + " selected" : "None selected";
      buttons.forEach(function (button) { button.disabled = chosen === 0; });
      if (all) {
        all.checked = chosen > 0 && chosen === boxes.length;
        all.indeterminate = chosen > 0 && chosen < boxes.length;
      }
    }

    if (all) {
      all.addEventListener("change", function () {
        boxes.forEach(function (box) { box.checked = all.checked; });
        refresh();
      });
    }
    boxes.forEach(function (box) { box.addEventListener("change", refresh); });
    refresh();
  }

  document.addEventListener("DOMContentLoaded", setUp);
})();
