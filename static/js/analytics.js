// The analytics page's charts: the error trend, errors by category and success per target, from the figures the
// template hands over with json_script (syncs.views.analytics) and drawn with the vendored Chart.js. Each canvas
// has its own text alternative in the page (an aria-label and a table), so nothing here is the only way to read
// a figure.
(function () {
  "use strict";

  var TEXT = "#566070";
  var GRID = "#eceef2";
  // One colour per category, distinct enough side by side; the table next to the chart names each bar anyway.
  var PALETTE = ["#dc2626", "#d97706", "#2563eb", "#7c3aed", "#059669", "#db2777", "#0891b2", "#65a30d",
                 "#9333ea", "#ea580c", "#475569"];

  var hourLabel = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit",
                                                      minute: "2-digit" });
  var hourTick = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  var dayTick = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });

  function common(extra) {
    var options = {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      plugins: { legend: { display: false } },
    };
    Object.keys(extra).forEach(function (key) { options[key] = extra[key]; });
    return options;
  }

  function drawTrend(canvas, trend) {
    // The axis says the hour for a day's window and the date for longer ones; the tooltip has both.
    var tick = trend.length > 24 ? dayTick : hourTick;
    var ticks = trend.map(function (bucket) { return tick.format(new Date(bucket.hour)); });
    return new window.Chart(canvas, {
      type: "line",
      data: {
        labels: trend.map(function (bucket) { return hourLabel.format(new Date(bucket.hour)); }),
        datasets: [{
          label: "Record errors",
          data: trend.map(function (bucket) { return bucket.count; }),
          borderColor: "#dc2626",
          backgroundColor: "rgba(220, 38, 38, 0.12)",
          fill: true,
          borderWidth: 2,
          pointRadius: 0,
          pointHitRadius: 6,
          tension: 0.2,
        }],
      },
      options: common({
        interaction: { mode: "index", intersect: false },
        scales: {
          x: {
            grid: { display: false },
            ticks: {
              autoSkip: true, autoSkipPadding: 16, maxTicksLimit: 8, maxRotation: 0, color: TEXT,
              callback: function (value) { return ticks[value]; },
            },
          },
          y: { beginAtZero: true, ticks: { precision: 0, color: TEXT }, grid: { color: GRID } },
        },
      }),
    });
  }

  function drawCategories(canvas, categories) {
    return new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: categories.map(function (row) { return row.label; }),
        datasets: [{
          label: "Record errors",
          data: categories.map(function (row) { return row.count; }),
          backgroundColor: categories.map(function (row, index) { return PALETTE[index % PALETTE.length]; }),
          borderRadius: 3,
        }],
      },
      options: common({
        indexAxis: "y",
        scales: {
          x: { beginAtZero: true, ticks: { precision: 0, color: TEXT }, grid: { color: GRID } },
          y: { grid: { display: false }, ticks: { color: TEXT } },
        },
      }),
    });
  }

  function drawTargets(canvas, targets) {
    return new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: targets.map(function (row) { return row.label; }),
        datasets: [{
          label: "Records synced",
          // A target without processed records has no rate (null): Chart.js leaves its bar out.
          data: targets.map(function (row) { return row.rate === null ? null : Math.round(row.rate * 1000) / 10; }),
          backgroundColor: "#059669",
          borderRadius: 3,
          maxBarThickness: 72,
        }],
      },
      options: common({
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { label: function (item) { return item.formattedValue + "% synced"; } } },
        },
        scales: {
          x: { grid: { display: false }, ticks: { color: TEXT } },
          y: { beginAtZero: true, max: 100, ticks: { color: TEXT, callback: function (value) { return value + "%"; } },
               grid: { color: GRID } },
        },
      }),
    });
  }

  function draw() {
    var source = document.getElementById("analytics-data");
    if (!source || typeof window.Chart === "undefined") return;
    var data = JSON.parse(source.textContent);
    var charts = [
      ["analytics-trend-chart", drawTrend, data.trend],
      ["analytics-categories-chart", drawCategories, data.categories],
      ["analytics-targets-chart", drawTargets, data.targets],
    ];
    charts.forEach(function (chart) {
      // The template leaves a canvas out when its figures are empty (an empty state stands in its place).
      var canvas = document.getElementById(chart[0]);
      if (canvas) chart[1](canvas, chart[2]);
    });
  }

  document.addEventListener("DOMContentLoaded", draw);
})();
