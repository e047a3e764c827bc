// The mapping editor (templates/mappings/partials/editor.html). htmx re-renders the editor after "Add a field
// mapping", "Add a transform" and the like; this moves the keyboard focus to what was just added (the server
// names it in data-focus), so a keyboard or screen reader user carries on where the new row or step is.
(function () {
  "use strict";

  function focusAdded(root) {
    var editor = root && root.id === "mapping-editor" ? root : document.getElementById("mapping-editor");
    if (!editor || !editor.dataset.focus) return;
    var field = document.getElementById(editor.dataset.focus);
    if (field) field.focus();
    delete editor.dataset.focus;
  }

  document.addEventListener("htmx:afterSettle", function (event) { focusAdded(event.detail.elt); });
  // Without htmx the same buttons submit the form and the page comes back with the new row.
  document.addEventListener("DOMContentLoaded", function () { focusAdded(null); });
})();
