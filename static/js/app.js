// Page-wide browser behaviour. The CSP allows no inline scripts or handlers, so it all lives here.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Every HTMX request carries the session's CSRF token; the server refuses writes without it.
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrfToken();
  });

  var flashTimer = null;

  function flash(message) {
    var box = document.getElementById("flash");
    if (!box) return;
    box.querySelector(".flash-text").textContent = message;
    box.hidden = false;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(function () { box.hidden = true; }, 8000);
  }

  function describe(xhr) {
    try {
      var body = JSON.parse(xhr.responseText);
      if (body && typeof body.detail === "string") return body.detail;
    } catch (e) { /* not JSON: fall through to the status */ }
    if (xhr.status === 403) return "You do not have permission to do that.";
    if (xhr.status === 404) return "That no longer exists. Reload the page to see the current state.";
    return "Something went wrong (HTTP " + xhr.status + "). Please try again.";
  }

  // Errors that are not form errors (those come back as 422 and are swapped in place).
  document.addEventListener("htmx:responseError", function (event) {
    flash(describe(event.detail.xhr));
  });

  document.addEventListener("htmx:sendError", function () {
    flash("Could not reach the server. Check the connection and try again.");
  });

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) return;

    if (target.closest(".flash-close")) {
      document.getElementById("flash").hidden = true;
      return;
    }

    // Buttons with data-copy="#selector" copy that element's text (tokens, new passwords).
    var copy = target.closest("[data-copy]");
    if (copy) {
      var source = document.querySelector(copy.getAttribute("data-copy"));
      if (!source || !navigator.clipboard) return;
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        var label = copy.textContent;
        copy.textContent = "Copied";
        setTimeout(function () { copy.textContent = label; }, 1500);
      });
    }
  });
})();
