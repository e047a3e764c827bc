// Settings → API tokens: the Copy button next to a new token's secret. The secret is in a read-only field the
// user can also select by hand, so this only saves a step (and stays hidden where it could not work).
(function () {
  "use strict";

  function copyWithSelection(field) {
    // The Clipboard API needs a secure context; over plain http to a non-local host the old way still works.
    field.focus();
    field.select();
    try {
      return document.execCommand("copy");
    } catch (error) {
      return false;
    }
  }

  function setUp(button) {
    var field = document.getElementById(button.dataset.copyFrom);
    var status = document.getElementById(button.dataset.copyStatus);
    if (!field) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      var done = function (copied) {
        if (status) {
          status.textContent = copied ? "Copied to the clipboard." : "Could not copy: select the token and copy it.";
        }
        if (!copied) field.select();
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(function () { done(true); },
                                                        function () { done(copyWithSelection(field)); });
      } else {
        done(copyWithSelection(field));
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("button[data-copy-from]").forEach(setUp);
  });
})();
