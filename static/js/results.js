/*
 * results.js: a room's results are things you can use (DESIGN.md, "Page hooks").
 *
 * - A result is a control (`button.use` around `output.result`): activating it (a click, or
 *   Enter / Space on it) inserts its reference `#12` at the input's cursor, replacing any
 *   selection, and gives the input the focus back.
 * - `button.copy` copies the plain value (the `.result` text, exactly as stored) and says so on
 *   the button and to screen readers.
 * - A `#N` in a stored expression (`a.ref`) goes to the entry it names: scrolls there and
 *   highlights it, loading older entries first if it is not shown yet. Farther back than a few
 *   pages, it opens the history page at that entry instead of loading the whole room.
 *
 * It relies only on the page's markup (`#expression`, `#entries`, `article[data-seq]`, and the
 * `#load-older` button, whose clicks room.js answers), through delegated listeners, so entries
 * that arrive live or with catch-up work like the ones the page came with. It changes nothing of
 * room.js.
 */
(function () {
  "use strict";

  var input = document.getElementById("expression");
  var entriesElt = document.getElementById("entries");
  var configElt = document.getElementById("room-config");
  var config = configElt ? JSON.parse(configElt.textContent) : {};

  var COPIED_MS = 1500;
  var HIGHLIGHT_MS = 2000;
  var MAX_LOAD_BACK = 1000; // entries to load in place at most; farther: the history page
  var LOAD_TIMEOUT_MS = 10000;

  // One polite live region for what this script does (copied, not found).
  var status = document.createElement("span");
  status.className = "results-status";
  status.setAttribute("role", "status");
  status.setAttribute("aria-live", "polite");
  document.body.appendChild(status);
  function announce(text) {
    status.textContent = "";
    // A change the screen reader notices even when the same text comes twice.
    setTimeout(function () {
      status.textContent = text;
    }, 50);
  }

  function entryOf(element) {
    return element.closest("article[data-seq]");
  }

  // --- Inserting a reference --------------------------------------------------------------------

  function maxLength() {
    if (input.maxLength > 0) return input.maxLength;
    return config.expressionMaxLength || Infinity;
  }

  function insertReference(seq) {
    if (!input || input.disabled || input.readOnly) return;
    var text = "#" + seq;
    // The input keeps its selection while something else has the focus.
    var start = input.selectionStart;
    var end = input.selectionEnd;
    if (start === null || end === null) start = end = input.value.length;
    if (input.value.length - (end - start) + text.length > maxLength()) {
      announce("The expression is full: #" + seq + " was not inserted.");
      input.focus();
      return;
    }
    input.focus({ preventScroll: true });
    input.setRangeText(text, start, end, "end");
    // As if typed: whatever listens to the input (typing indicator, recall) hears it.
    input.dispatchEvent(new Event("input", { bubbles: true }));
  }

  // --- Copying the plain value ------------------------------------------------------------------

  function writeClipboard(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "results-status";
      document.body.appendChild(area);
      area.select();
      var done = false;
      try {
        done = document.execCommand("copy");
      } catch (e) {
        done = false;
      }
      area.remove();
      if (done) resolve();
      else reject(new Error("copy refused"));
    });
  }

  function copyResult(button) {
    var article = entryOf(button);
    var output = article && article.querySelector(".result");
    if (!output) return;
    var value = output.textContent;
    var seq = article.dataset.seq;
    writeClipboard(value).then(
      function () {
        confirmCopy(button, "Copied", "copied");
        announce("Copied the result of #" + seq + ".");
      },
      function () {
        confirmCopy(button, "Copy failed", "copy-failed");
        announce("Could not copy the result of #" + seq + ".");
      }
    );
  }

  function confirmCopy(button, text, state) {
    clearTimeout(button.resultsTimer);
    if (!button.dataset.label) button.dataset.label = button.textContent;
    button.textContent = text;
    button.dataset.state = state;
    button.resultsTimer = setTimeout(function () {
      button.textContent = button.dataset.label;
      delete button.dataset.state;
    }, COPIED_MS);
  }

  // --- Going to a referenced entry --------------------------------------------------------------

  function highlight(article) {
    article.scrollIntoView({ block: "center" });
    article.classList.remove("highlight");
    void article.offsetWidth; // restart the animation when it is named twice in a row
    article.classList.add("highlight");
    clearTimeout(article.resultsTimer);
    article.resultsTimer = setTimeout(function () {
      article.classList.remove("highlight");
    }, HIGHLIGHT_MS);
    if (!article.hasAttribute("tabindex")) article.setAttribute("tabindex", "-1");
    article.focus({ preventScroll: true });
  }

  function shown(seq) {
    return document.getElementById("entry-" + seq);
  }

  function olderButton() {
    var button = document.getElementById("load-older");
    return button && button.isConnected ? button : null;
  }

  // Press "Load older entries" (room.js loads the page before the oldest shown) until the entry
  // is there, the room has nothing older, or it takes too long.
  function loadBackTo(seq) {
    return new Promise(function (resolve) {
      var finished = false;
      var poll = null;
      var observer = null;
      var deadline = setTimeout(function () {
        finish(shown(seq));
      }, LOAD_TIMEOUT_MS);
      function finish(found) {
        if (finished) return;
        finished = true;
        clearTimeout(deadline);
        clearInterval(poll);
        if (observer) observer.disconnect();
        resolve(found);
      }
      function step() {
        if (finished) return;
        var found = shown(seq);
        if (found) return finish(found);
        var button = olderButton();
        if (!button) return finish(null); // nothing older: it is not in this room's history
        if (!button.disabled) button.click();
      }
      if (entriesElt && "MutationObserver" in window) {
        observer = new MutationObserver(step);
        observer.observe(entriesElt, { childList: true });
      }
      poll = setInterval(step, 250); // also after a failed page, which changes nothing
      step();
    });
  }

  function historyUrl(seq) {
    var path = window.location.pathname.replace(/\/?$/, "/");
    return path + "history/?before=" + (seq + 1) + "#entry-" + seq;
  }

  function goTo(seq) {
    var found = shown(seq);
    if (found) return highlight(found);
    var button = olderButton();
    var oldest = button ? parseInt(button.dataset.before, 10) : NaN;
    if (!button) {
      announce("#" + seq + " is not in this room.");
      return;
    }
    if (oldest - seq > MAX_LOAD_BACK) {
      window.location.assign(historyUrl(seq));
      return;
    }
    announce("Loading older entries up to #" + seq + "…");
    loadBackTo(seq).then(function (article) {
      if (article) highlight(article);
      else announce("#" + seq + " could not be shown.");
    });
  }

  // --- Wiring -----------------------------------------------------------------------------------

  document.addEventListener("click", function (evt) {
    if (!(evt.target instanceof Element) || evt.defaultPrevented) return;
    var use = evt.target.closest("article[data-seq] button.use");
    if (use) {
      insertReference(entryOf(use).dataset.seq);
      return;
    }
    var copy = evt.target.closest("article[data-seq] button.copy");
    if (copy) {
      copyResult(copy);
      return;
    }
    var ref = evt.target.closest("article[data-seq] a.ref[data-ref]");
    if (ref && evt.button === 0 && !evt.ctrlKey && !evt.metaKey && !evt.shiftKey && !evt.altKey) {
      evt.preventDefault();
      goTo(parseInt(ref.dataset.ref, 10));
    }
  });

  // Opened at `#entry-12` (a shared link): go there once the page is set up.
  var named = /^#entry-(\d+)$/.exec(window.location.hash);
  if (named && entriesElt) {
    setTimeout(function () {
      goTo(parseInt(named[1], 10));
    }, 0);
  }
})();
