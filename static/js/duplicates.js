// The duplicates view's keys: J and K move between group cards, 1-9 keep that member of the
// group in focus (its "Keep only this" button). The CSP allows no inline handlers.
(function () {
  "use strict";

  function cards() {
    return Array.prototype.slice.call(document.querySelectorAll(".group-card"));
  }

  function isField(el) {
    return el instanceof Element && el.closest("input, select, textarea, [contenteditable]") !== null;
  }

  function current() {
    var active = document.activeElement;
    return active instanceof Element ? active.closest(".group-card") : null;
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.isComposing || event.altKey || event.ctrlKey || event.metaKey) return;
    if (isField(event.target) || !document.querySelector(".dup-groups")) return;
    var key = event.key.toLowerCase();
    var all = cards();
    var here = current();
    if (key === "j" || key === "k") {
      if (!all.length) return;
      event.preventDefault();
      var at = here ? all.indexOf(here) : -1;
      var next = key === "j" ? Math.min(all.length - 1, at + 1) : Math.max(0, at < 0 ? 0 : at - 1);
      all[next].focus();
      all[next].scrollIntoView({ block: "nearest" });
      return;
    }
    if (/^[1-9]$/.test(key) && here) {
      var button = here.querySelector('button[data-keep="' + key + '"]');
      if (!button || button.disabled || here.querySelector("form.htmx-request")) return;
      event.preventDefault();
      if (event.repeat) return;
      button.click();
    }
  });

  // The card that replaced the focused one keeps the focus, so the keys go on working.
  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    var id = target instanceof Element && target.classList.contains("group-card") ? target.id : "";
    var fresh = id ? document.getElementById(id) : null;
    if (fresh) fresh.focus({ preventScroll: true });
  });
})();
