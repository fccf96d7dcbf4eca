// Charts drawn with Chart.js from JSON data blocks in the page.
// A <canvas data-chart="KIND" data-source="ID"> is drawn from <script type="application/json" id="ID">;
// data blocks are not executed, so the CSP (script-src 'self') has nothing to block.
(function () {
  "use strict";

  var INK = "#5f6b76";
  var GRID = "#eef0f2";
  var FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';
  // Muted, distinguishable colours: the app's teal first.
  var PALETTE = ["#0f766e", "#4e79a7", "#e08b39", "#b8505a", "#7a9e4e", "#a47ab5",
    "#c9a227", "#5fa8a0", "#8c6d5a", "#7f8a96", "#d37f9c", "#3f5f8f"];
  var SPLIT_COLOURS = { train: "#0f766e", valid: "#4e79a7", test: "#c9a227" };

  function colour(i) { return PALETTE[i % PALETTE.length]; }

  function readData(id) {
    var node = id ? document.getElementById(id) : null;
    if (!node) return null;
    try { return JSON.parse(node.textContent); } catch (e) { return null; }
  }

  function setDefaults() {
    var d = window.Chart.defaults;
    d.font.family = FONT;
    d.font.size = 12;
    d.color = INK;
    d.borderColor = GRID;
    d.maintainAspectRatio = false;
    d.animation = { duration: 250 };
    d.plugins.legend.labels.boxWidth = 12;
    d.plugins.legend.labels.boxHeight = 12;
    if (d.plugins.legend.labels.generateLabels !== uniformLegend) {
      defaultLabels = d.plugins.legend.labels.generateLabels;
      d.plugins.legend.labels.generateLabels = uniformLegend;
    }
    d.plugins.tooltip.backgroundColor = "#1d2329";
  }

  // Chart.js draws each legend marker with its dataset's border: bars get a bare 12 px square,
  // lines one with a 2 px outline, a dashed line a dashed one. Every marker here is the same
  // filled square in the series' colour instead.
  var defaultLabels = null;

  function seriesColour(dataset, item) {
    if (typeof dataset.backgroundColor === "string") return dataset.backgroundColor;
    return typeof dataset.borderColor === "string" ? dataset.borderColor : item.fillStyle;
  }

  function uniformLegend(chart) {
    return defaultLabels.call(this, chart).map(function (item) {
      var dataset = chart.data.datasets[item.datasetIndex] || {};
      var c = seriesColour(dataset, item);
      item.fillStyle = c;
      item.strokeStyle = c;
      item.lineWidth = 0;
      item.lineDash = [];
      item.lineDashOffset = 0;
      item.pointStyle = "rect";
      item.borderRadius = 0;
      return item;
    });
  }

  function scoreAxis(extra) {
    var axis = { min: 0, max: 1, ticks: { stepSize: 0.2 }, grid: { color: GRID } };
    return Object.assign(axis, extra || {});
  }

  function fixed(v) { return v === null || v === undefined ? "–" : Number(v).toFixed(3); }

  var builders = {
    // Labelled samples per class, one bar per split.
    distribution: function (data) {
      return {
        type: "bar",
        data: {
          labels: data.labels,
          datasets: data.series.map(function (s, i) {
            var c = SPLIT_COLOURS[s.name] || colour(i);
            return { label: s.name, data: s.values, backgroundColor: c, borderRadius: 2, maxBarThickness: 28 };
          })
        },
        options: {
          plugins: { legend: { position: "bottom" } },
          scales: {
            x: { grid: { display: false } },
            y: { beginAtZero: true, grid: { color: GRID }, ticks: { precision: 0 } }
          }
        }
      };
    },

    // F1 per class (valid, and test when there is one), worst first, as horizontal bars.
    per_class: function (data) {
      return {
        type: "bar",
        data: {
          labels: data.labels,
          datasets: data.series.map(function (s, i) {
            return { label: s.name, data: s.values, backgroundColor: i === 0 ? "#0f766e" : "#c9a227",
              borderRadius: 2, maxBarThickness: 18 };
          })
        },
        options: {
          indexAxis: "y",
          plugins: {
            legend: { position: "bottom" },
            tooltip: { callbacks: { label: function (ctx) { return ctx.dataset.label + ": " + fixed(ctx.raw); } } }
          },
          scales: { x: scoreAxis(), y: { grid: { display: false } } }
        }
      };
    },

    // Each class's F1 across runs.
    history: function (data) {
      return {
        type: "line",
        data: {
          labels: data.labels,
          datasets: data.series.map(function (s, i) {
            return { label: s.name, data: s.values, borderColor: colour(i), backgroundColor: colour(i),
              borderWidth: 2, pointRadius: 3, tension: 0, spanGaps: true };
          })
        },
        options: {
          interaction: { mode: "nearest", intersect: false },
          plugins: {
            legend: { position: "right" },
            tooltip: { callbacks: { label: function (ctx) { return ctx.dataset.label + ": " + fixed(ctx.raw); } } }
          },
          // Not from zero: the changes between runs are what this chart is for.
          scales: { x: { grid: { display: false } }, y: { max: 1, suggestedMin: 0.5, grid: { color: GRID } } }
        }
      };
    },

    // Train and valid loss over every epoch of every model (folds, then the final model),
    // with accuracy on a second axis when the history has it.
    loss: function (data) {
      var history = data.history || [];
      var labels = history.map(function (e) { return e.model + " · " + e.epoch; });
      function series(key) { return history.map(function (e) { var v = e[key]; return v === undefined ? null : v; }); }
      // Each model (fold) trains from scratch: no line joins the last epoch of one to the first of the next.
      var segment = {
        borderColor: function (ctx) {
          return history[ctx.p0DataIndex].model === history[ctx.p1DataIndex].model ? undefined : "transparent";
        }
      };
      var datasets = [
        { label: "train loss", data: series("train_loss"), borderColor: "#0f766e", backgroundColor: "#0f766e",
          borderWidth: 2, pointRadius: 2, tension: 0, yAxisID: "y", spanGaps: true, segment: segment },
        { label: "valid loss", data: series("valid_loss"), borderColor: "#4e79a7", backgroundColor: "#4e79a7",
          borderWidth: 2, pointRadius: 2, tension: 0, yAxisID: "y", spanGaps: true, segment: segment }
      ];
      var hasAccuracy = history.some(function (e) { return typeof e.accuracy === "number"; });
      if (hasAccuracy) {
        datasets.push({ label: "accuracy", data: series("accuracy"), borderColor: "#c9a227", backgroundColor: "#c9a227",
          borderWidth: 2, borderDash: [5, 4], pointRadius: 2, tension: 0, yAxisID: "accuracy", spanGaps: true,
          segment: segment });
      }
      var scales = {
        x: { grid: { display: false }, ticks: { autoSkip: true, maxRotation: 0 } },
        y: { beginAtZero: true, grid: { color: GRID }, title: { display: true, text: "loss" } }
      };
      if (hasAccuracy) {
        scales.accuracy = scoreAxis({ position: "right", grid: { display: false }, title: { display: true, text: "accuracy" } });
      }
      return {
        type: "line",
        data: { labels: labels, datasets: datasets },
        options: {
          interaction: { mode: "index", intersect: false },
          plugins: { legend: { position: "bottom" } },
          scales: scales
        }
      };
    }
  };

  var charts = {};

  // Draw (or redraw with new data) the chart of one canvas; returns the Chart.
  function draw(canvas, data) {
    var kind = canvas.getAttribute("data-chart");
    var build = builders[kind];
    if (!build || !data || !window.Chart) return null;
    var config = build(data);
    var key = canvas.id || canvas.getAttribute("data-source") || kind;
    var existing = charts[key];
    if (existing && existing.canvas === canvas) {
      existing.data = config.data;
      existing.options = config.options;
      existing.update("none");
      return existing;
    }
    if (existing) existing.destroy();
    charts[key] = new window.Chart(canvas, config);
    canvas.setAttribute("data-drawn", "true");
    return charts[key];
  }

  function drawAll(root) {
    (root || document).querySelectorAll("canvas[data-chart][data-source]").forEach(function (canvas) {
      var data = readData(canvas.getAttribute("data-source"));
      if (data) draw(canvas, data);
    });
  }

  window.CurateCharts = { draw: draw, drawAll: drawAll };

  function start() {
    if (!window.Chart) return;
    setDefaults();
    drawAll(document);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
