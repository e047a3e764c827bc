// Settings → Notifications, the rule form: only the inputs the chosen condition and scope use are shown (the N of
// a threshold, the minutes, the digest hour, the connection or mapping, the customer's contacts). Without
// JavaScript every input stays visible and the service ignores those that do not apply.
(function () {
  "use strict";

  var USES = {
    threshold: function (state) { return state.condition === "failures_per_hour" || state.condition === "unsynced_records"; },
    minutes: function (state) { return state.condition === "target_failing"; },
    digest_hour: function (state) { return state.condition === "daily_digest"; },
    connection: function (state) { return state.scope === "connection"; },
    mapping: function (state) { return state.scope === "mapping"; },
    customer_name: function (state) { return state.customer; },
    customer_contacts: function (state) { return state.customer; },
  };

  function setUp(form) {
    var condition = form.elements.namedItem("condition");
    var customer = form.elements.namedItem("customer_facing");

    function state() {
      var scope = form.querySelector("input[name='scope']:checked");
      return {
        condition: condition ? condition.value : "",
        scope: scope ? scope.value : "organization",
        customer: customer ? customer.checked : false,
      };
    }

    function update() {
      var now = state();
      Object.keys(USES).forEach(function (name) {
        var box = form.querySelector("[data-rule-field='" + name + "']");
        // A field with an error stays in view, whatever the choices say.
        if (box && !box.classList.contains("field-invalid")) box.hidden = !USES[name](now);
      });
    }

    form.addEventListener("change", update);
    update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("rule-form");
    if (form) setUp(form);
  });
})();
