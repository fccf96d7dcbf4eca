// The job page's loss curves: redrawn from the REST API as epochs finish, until the job ends.
// (The status, epoch table and log are HTMX fragments that poll themselves.) And the log's
// place while a reader scrolls back through it.
(function () {
  "use strict";

  var INTERVAL = 2000;
  var FINISHED = ["succeeded", "failed", "cancelled"];

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
      if (!r.ok) {
        var err = new Error("HTTP " + r.status + " from " + url);
        err.status = r.status;
        throw err;
      }
      return r.json();
    });
  }

  function show(history) {
    var canvas = document.getElementById("loss-chart");
    if (!canvas || !window.CurateCharts || !history.length) return;
    document.getElementById("loss-box").hidden = false;
    var empty = document.getElementById("loss-empty");
    if (empty) empty.hidden = true;
    window.CurateCharts.draw(canvas, { history: history });
  }

  function start() {
    var canvas = document.getElementById("loss-chart");
    if (!canvas || canvas.getAttribute("data-finished") === "true") return;
    var jobId = canvas.getAttribute("data-job");
    var seen = -1;

    function tick() {
      getJSON("/api/v1/jobs/" + encodeURIComponent(jobId))
        .then(function (job) {
          var done = FINISHED.indexOf(job.status) >= 0;
          if (job.run_id === null || job.run_id === undefined) return done;
          return getJSON("/api/v1/runs/" + encodeURIComponent(job.run_id)).then(function (run) {
            var history = run.history || [];
            if (history.length !== seen) {
              seen = history.length;
              show(history);
            }
            return done;
          });
        })
        .then(function (done) {
          if (!done) setTimeout(tick, INTERVAL);
        })
        .catch(function (err) {
          // Signed out or gone: the HTMX blocks say so. A dropped request: try again a little later.
          if (err && err.status >= 400 && err.status < 500) return;
          setTimeout(tick, INTERVAL * 3);
        });
    }

    tick();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }

  // The log box shows its newest line by itself: pages.css lays it out as a column-reverse box,
  // which a browser opens at its end, and every poll swaps in a new box. A reader who scrolls up
  // to read older lines keeps their place across the swaps (remembered here, outside the
  // swapped element); scrolled back to the end, the box follows the newest line again.
  var LOG_ID = "job-log";
  var readingAt = null; // the reader's distance from the top of the log; null: following the end

  function reversed(log) {
    return window.getComputedStyle(log).flexDirection === "column-reverse";
  }

  function scrollRange(log) {
    return Math.max(0, log.scrollHeight - log.clientHeight);
  }

  // Reversed boxes count scrollTop from their end (0) up into negative numbers.
  function fromTop(log) {
    return reversed(log) ? scrollRange(log) + log.scrollTop : log.scrollTop;
  }

  function scrollFromTop(log, y) {
    log.scrollTop = reversed(log) ? y - scrollRange(log) : y;
  }

  document.addEventListener("scroll", function (event) {
    var log = event.target;
    if (!(log instanceof Element) || log.id !== LOG_ID) return;
    var y = fromTop(log);
    readingAt = scrollRange(log) - y > 4 ? y : null;
  }, true);

  function keepPlace() {
    var log = document.getElementById(LOG_ID);
    if (!log) return;
    if (readingAt === null) {
      if (!reversed(log)) log.scrollTop = log.scrollHeight;
    } else {
      scrollFromTop(log, readingAt);
    }
  }

  document.addEventListener("htmx:afterSwap", keepPlace);
  document.addEventListener("htmx:afterSettle", keepPlace);
})();
