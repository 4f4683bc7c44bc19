/*
 * times.js: entry times in the viewer's time zone. Every `<time datetime="...Z">` inside an
 * element with `data-dated` shows its local time (the exact date and time on hover, as its
 * title), and the first entry of each local day is marked with its day (Today, Yesterday, or
 * the date) in `data-day`, which the stylesheet shows as a separator. Entries added later
 * (live, catch-up, older pages) are handled as they come.
 */
(function () {
  "use strict";
  var DAY_MS = 86400000;

  function localDay(when) {
    return new Date(when.getFullYear(), when.getMonth(), when.getDate());
  }

  function dayLabel(when) {
    var today = localDay(new Date());
    var days = Math.round((today - localDay(when)) / DAY_MS);
    if (days === 0) return "Today";
    if (days === 1) return "Yesterday";
    var options = { weekday: "short", day: "numeric", month: "short" };
    if (when.getFullYear() !== today.getFullYear()) options.year = "numeric";
    return when.toLocaleDateString(undefined, options);
  }

  function format(time) {
    if (time.dataset.local) return;
    var when = new Date(time.getAttribute("datetime"));
    if (isNaN(when)) return;
    time.dataset.local = "true";
    time.textContent = when.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
    time.title = when.toLocaleString(undefined, { dateStyle: "full", timeStyle: "long" });
  }

  function dayOf(article) {
    var time = article.querySelector("time[datetime]");
    var when = time ? new Date(time.getAttribute("datetime")) : null;
    return when && !isNaN(when) ? when : null;
  }

  // The first entry of each local day carries `data-day` (its label, shown by the stylesheet as a
  // separator above it). Attributes only, and only where they change: inserting elements would
  // move what room.js and results.js keep in view (their observers watch the log's children).
  function refresh(container) {
    container.querySelectorAll("time[datetime]").forEach(format);
    var previous = null;
    container.querySelectorAll(":scope > article[data-seq]").forEach(function (article) {
      var when = dayOf(article);
      var key = when ? String(localDay(when).getTime()) : previous;
      var label = when && key !== previous ? dayLabel(when) : null;
      if (label === null) {
        if (article.hasAttribute("data-day")) article.removeAttribute("data-day");
      } else if (article.getAttribute("data-day") !== label) {
        article.setAttribute("data-day", label);
      }
      previous = key;
    });
  }

  window.CalcroomsTimes = { format: format, refresh: refresh };

  function start() {
    document.querySelectorAll("[data-dated]").forEach(function (container) {
      refresh(container);
      var pending = false;
      new MutationObserver(function () {
        if (pending) return;
        pending = true;
        Promise.resolve().then(function () {
          pending = false;
          refresh(container);
        });
      }).observe(container, { childList: true });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
