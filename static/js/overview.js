// The overview's error trend: record errors per UTC hour (syncs.analytics.error_trend), handed over by the
// template with json_script and drawn with the vendored Chart.js.
(function () {
  "use strict";

  var hourLabel = new Intl.DateTimeFormat(undefined, { weekday: "short", hour: "2-digit", minute: "2-digit" });

  function drawErrorTrend() {
    var canvas = document.getElementById("error-trend-chart");
    var source = document.getElementById("error-trend-data");
    if (!canvas || !source || typeof window.Chart === "undefined") return;
    var hours = JSON.parse(source.textContent);
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: hours.map(function (hour) { return hourLabel.format(new Date(hour.hour)); }),
        datasets: [{
          label: "Record errors",
          data: hours.map(function (hour) { return hour.count; }),
          backgroundColor: "#dc2626",
          borderRadius: 2,
          barPercentage: 1,
          categoryPercentage: 0.9,
        }],
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        plugins: { legend: { display: false } },
        scales: {
          x: { grid: { display: false }, ticks: { autoSkip: true, maxTicksLimit: 7, maxRotation: 0, color: "#566070" } },
          y: { beginAtZero: true, ticks: { precision: 0, color: "#566070" }, grid: { color: "#eceef2" } },
        },
      },
    });
  }

  document.addEventListener("DOMContentLoaded", drawErrorTrend);
})();
