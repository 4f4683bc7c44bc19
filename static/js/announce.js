// Calcrooms: what a screen reader hears, and the online list that collapses on a phone.
//
// - Other people's new entries are announced through the polite live region #announcements: one
//   short text per entry ("alice: 12*7 = 84"). Entries that arrive together (a catch-up after a
//   reconnect, a burst) are announced as one summary ("5 new entries"). Your own entries, older
//   pages loaded on request and the entries the page opened with are never announced, and typing is
//   never announced here (#typing is its own polite line).
// - The online list (`#online` inside `details#people`) is a count you can open: open on wide
//   screens, closed on narrow ones; the count in its summary follows the list.
//
// It only watches the page (a MutationObserver on #entries): room.js knows nothing of it.
(function () {
  "use strict";

  var entries = document.getElementById("entries");
  var region = document.getElementById("announcements");
  if (!entries || !region) return;

  var me = region.dataset.username || "";
  var BATCH_MS = 300; // entries inserted within this window are one burst
  var MAX_SINGLE = 3; // a burst of more than this many is announced as a count
  var KEEP = 5; // texts kept in the region (older ones are removed, they were read already)

  var announcedUpTo = parseInt(entries.dataset.lastSeq, 10) || 0;
  var queue = [];
  var timer = null;

  function text(article) {
    var author = article.querySelector(".author");
    var expression = article.querySelector(".expression");
    var result = article.querySelector(".result");
    var error = article.querySelector(".error-text");
    var who = author ? author.textContent.trim() : article.dataset.author;
    var what = expression ? expression.textContent.trim() : "";
    if (result) {
      var approx = article.querySelector(".equals.approx") ? " ≈ " : " = ";
      return who + ": " + what + approx + result.textContent.trim();
    }
    return who + ": " + what + (error ? ", " + error.textContent.trim() : "");
  }

  function say(message) {
    var line = document.createElement("p");
    line.textContent = message;
    region.appendChild(line);
    while (region.childElementCount > KEEP) region.removeChild(region.firstElementChild);
  }

  function flush() {
    timer = null;
    var batch = queue;
    queue = [];
    if (batch.length === 0) return;
    if (batch.length > MAX_SINGLE) {
      say(batch.length + " new entries");
    } else {
      batch.forEach(function (article) {
        say(text(article));
      });
    }
  }

  function consider(article) {
    var seq = parseInt(article.dataset.seq, 10);
    if (!(seq > announcedUpTo)) return; // shown already, or an older page loaded on request
    announcedUpTo = seq;
    if (article.dataset.author === me) return; // yours: not news to you
    queue.push(article);
    if (timer === null) timer = setTimeout(flush, BATCH_MS);
  }

  new MutationObserver(function (records) {
    records.forEach(function (record) {
      record.addedNodes.forEach(function (node) {
        if (node.nodeType !== 1) return;
        if (node.matches("article[data-seq]")) consider(node);
        else node.querySelectorAll("article[data-seq]").forEach(consider);
      });
    });
  }).observe(entries, { childList: true });

  // --- The online list: a count you can open -------------------------------------------------------

  var people = document.getElementById("people");
  var count = document.getElementById("online-count");
  if (people && count) {
    var wide = window.matchMedia("(min-width: 721px)");
    var follow = function () {
      people.open = wide.matches;
    };
    follow();
    wide.addEventListener("change", follow);
    var recount = function () {
      var online = document.getElementById("online");
      var n = online ? online.querySelectorAll("li").length : 0;
      if (count.textContent === String(n)) return; // (setting it would observe itself)
      count.textContent = String(n);
      people.dataset.count = String(n);
    };
    recount();
    new MutationObserver(recount).observe(people, { childList: true, subtree: true });
  }
})();
