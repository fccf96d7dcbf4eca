// Review queue, grid and history pages: keyboard shortcuts, grid selection, the class filter.
// The CSP allows no inline handlers, so every behaviour is delegated from the document here.
(function () {
  "use strict";

  // A 409 from these pages is a conflict to show (whose change, and a choice), not a failure.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (event.detail.xhr.status === 409 && target && target.closest("[data-conflict-swap]")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // --- the queue: one key, one action ---------------------------------------------------

  var pendingKey = null;

  function isField(el) {
    // A multi-label queue's tag checkboxes are not fields: the keys go on working after a click.
    return el instanceof Element && el.closest("input:not(.tag-check), select, textarea, [contenteditable]") !== null;
  }

  function keyName(event) {
    if (event.altKey || event.metaKey) return null;
    if (event.ctrlKey) return event.key === "z" || event.key === "Z" ? "u" : null;
    if (event.key === " " || event.key === "Spacebar") return "space";
    return event.key.toLowerCase();
  }

  document.addEventListener("keydown", function (event) {
    var form = document.getElementById("review-form");
    if (!form || event.defaultPrevented || event.isComposing) return;
    pendingKey = null;
    var target = event.target;

    if (isField(target)) {
      var filter = target.closest("[data-filter]");
      if (filter && event.key === "Enter") {
        // Enter in the class filter sets the class it narrowed to, not the first class button.
        event.preventDefault();
        var choose = form.querySelector('button[value="choice"]');
        if (choose) choose.click();
      } else if (event.key === "Escape") {
        target.blur();
      }
      return;
    }

    var name = keyName(event);
    if (!name) return;
    // A button reached with Tab keeps its own Enter and Space.
    if ((name === "enter" || name === "space") && target instanceof Element && target.closest("button, a")) return;
    if (name === "space" && target instanceof Element && target.closest(".tag-check")) return;
    // A multi-label queue: a class's key toggles its tag in the pending set; Enter saves it.
    var tag = form.querySelector('.tag-check[data-tag-key="' + CSS.escape(name) + '"]');
    if (tag) {
      event.preventDefault();
      if (!event.repeat) tag.click();
      return;
    }
    if (name === "/") {
      var box = form.querySelector("[data-filter]");
      if (box) {
        event.preventDefault();
        box.focus();
      }
      return;
    }
    if (!form.querySelector('button[data-key="' + CSS.escape(name) + '"]')) return;
    event.preventDefault();
    if (event.repeat) return; // a held key is not a burst of actions
    if (form.closest(".htmx-added")) {
      // The panel has just been swapped in and htmx has not wired it up yet (it does so a
      // moment later): keep the key until it has, or it would post the form without htmx.
      pendingKey = name;
      return;
    }
    press(form, name);
  });

  function press(form, name) {
    var button = form.querySelector('button[data-key="' + CSS.escape(name) + '"]');
    // One action at a time: a key pressed while one is saving is dropped, not queued.
    if (!button || button.disabled || form.classList.contains("htmx-request")) return;
    button.click();
  }

  document.addEventListener("htmx:load", function () {
    if (pendingKey === null) return;
    var form = document.getElementById("review-form");
    if (!form || form.closest(".htmx-added")) return;
    var name = pendingKey;
    pendingKey = null;
    press(form, name);
  });

  document.addEventListener("input", function (event) {
    var input = event.target instanceof Element ? event.target.closest("[data-filter]") : null;
    if (!input) return;
    var select = document.querySelector(input.getAttribute("data-filter"));
    if (!select) return;
    var query = input.value.trim().toLowerCase();
    var first = null;
    Array.prototype.forEach.call(select.options, function (option) {
      var show = option.value.toLowerCase().indexOf(query) !== -1;
      option.hidden = !show;
      if (show && first === null) first = option;
    });
    select.value = first ? first.value : "";
  });

  // A multi-label queue's pending set: mark the tags it changes and say what Enter will save.
  function showPending(form) {
    var box = form.querySelector("[data-pending]");
    if (!box) return;
    var added = [];
    var removed = [];
    Array.prototype.forEach.call(form.querySelectorAll(".tag-check"), function (check) {
      var changed = check.checked !== check.defaultChecked;
      check.closest(".tag").classList.toggle("is-pending", changed);
      if (changed) (check.checked ? added : removed).push(check.value);
    });
    var parts = [];
    if (added.length) parts.push("+ " + added.join(", "));
    if (removed.length) parts.push("− " + removed.join(", "));
    box.textContent = parts.length ? "Enter saves: " + parts.join(" · ") : "Unchanged";
  }

  document.addEventListener("change", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (target && target.matches(".tag-check")) showPending(target.form);
  });

  // Filter forms apply as soon as a choice changes.
  document.addEventListener("change", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target || !target.matches("select, input[type=checkbox]")) return;
    var form = target.closest("form[data-autosubmit]");
    if (form) form.requestSubmit();
  });

  // --- the grid: click, shift-click for a range, select all --------------------------------

  // The box clicked last, the anchor of a shift-click range. An element, not a position: a
  // swap that replaces the tiles leaves it detached (no range), while a swap elsewhere on the
  // page (the progress count loading) keeps it.
  var lastBox = null;

  function boxesOf(grid) {
    return Array.prototype.slice.call(grid.querySelectorAll(".tile-check"));
  }

  function showCount(grid) {
    var count = grid.querySelector(".selection-count");
    if (!count) return;
    var n = boxesOf(grid).filter(function (b) { return b.checked; }).length;
    count.textContent = n + " selected";
  }

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    var grid = target ? target.closest("[data-grid]") : null;
    if (!grid) return;

    var select = target.closest("[data-select]");
    if (select) {
      var on = select.getAttribute("data-select") === "all";
      boxesOf(grid).forEach(function (b) { b.checked = on; });
      lastBox = null;
      showCount(grid);
      return;
    }

    var tile = target.closest(".tile");
    if (!tile) return;
    var box = tile.querySelector(".tile-check");
    if (target !== box) {
      // Toggle here rather than through the label, so shift-clicks keep their shift key.
      event.preventDefault();
      box.checked = !box.checked;
    }
    var boxes = boxesOf(grid);
    var index = boxes.indexOf(box);
    var lastIndex = lastBox ? boxes.indexOf(lastBox) : -1;
    if (event.shiftKey && lastIndex >= 0 && lastIndex !== index) {
      var lo = Math.min(lastIndex, index);
      var hi = Math.max(lastIndex, index);
      for (var i = lo; i <= hi; i++) boxes[i].checked = box.checked;
    }
    lastBox = box;
    showCount(grid);
  });
})();
