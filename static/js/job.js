// The job page's loss curves: redrawn from the REST API as epochs finish, until the job ends.
// (The status, epoch table and log are HTMX fragments that poll themselves.)
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
})();
