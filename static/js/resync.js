// Behaviour every page shares. Loaded as a file (no inline script), so a strict Content-Security-Policy holds.
(function () {
  "use strict";

  // Dropdown menus are <details>: they open and close without JavaScript; this closes an open one on Escape
  // (focus back on its summary) and on a click outside it, as a menu is expected to.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    document.querySelectorAll("details.dropdown[open]").forEach(function (menu) {
      menu.removeAttribute("open");
      menu.querySelector("summary").focus();
    });
  });
  document.addEventListener("click", function (event) {
    document.querySelectorAll("details.dropdown[open]").forEach(function (menu) {
      if (!menu.contains(event.target)) menu.removeAttribute("open");
    });
  });
})();
