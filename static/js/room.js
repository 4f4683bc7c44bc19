/*
 * room.js: what the htmx ws extension needs help with on the room page.
 *
 * - Catch-up merge: on every (re)open of the socket the live subscription is already running; we
 *   then fetch `entries/?after=<last seq>` over HTTP, hold live entries that arrive meanwhile, and
 *   apply everything in seq order, each seq exactly once. A live entry that skips a seq, or a `sync`
 *   frame that is ahead, triggers the same fetch. The channel layer is at-most-once; this merge is
 *   what makes the room exactly-once and ordered.
 * - Submissions carry a client_id and stay pending until their entry is shown; after a reconnect the
 *   pending ones are sent again (the server stores a client_id once).
 * - Typing frames (at most every 2 s while the input changes, and typing.stop).
 * - Connection status, reconnect backoff capped at 10 s, and reconnecting at once when the browser
 *   comes back online or the tab becomes visible. Never reconnect after a 44xx close.
 */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("room-config").textContent);
  var roomElt = document.getElementById("room");
  var entriesElt = document.getElementById("entries");
  var connectionElt = document.getElementById("connection");
  var awayElt = document.getElementById("away");
  var errorsElt = document.getElementById("errors");
  var input = document.getElementById("expression");
  var form = document.getElementById("compose");

  // Every timing and limit comes from the server (project/settings.py), with the room's config.
  var RECONNECT_CAP_MS = config.reconnectCapMs;
  var TYPING_INTERVAL_MS = config.typingIntervalMs;
  var PAGE_LIMIT = config.pageLimit;

  var state = {
    lastSeq: config.lastSeq || 0, // every seq <= lastSeq is shown, exactly once
    held: new Map(), // seq -> element, live entries waiting for their turn
    fetching: false,
    fetchAgain: false,
    socket: null, // the ws extension's public socket wrapper
    open: false,
    opens: 0,
    nextAttemptAt: null,
    closedForGood: false,
    pending: new Map(), // client_id -> JSON body, submitted but not yet shown
    typingSentAt: 0,
    typingActive: false,
  };

  // --- Connection status and reconnecting -------------------------------------------------------

  function setConnection(kind, text) {
    connectionElt.dataset.state = kind;
    connectionElt.textContent = text;
  }

  var countdownTimer = null;
  function showReconnecting() {
    clearInterval(countdownTimer);
    var tick = function () {
      if (state.open || state.closedForGood) {
        clearInterval(countdownTimer);
        return;
      }
      var wait = state.nextAttemptAt ? Math.max(0, state.nextAttemptAt - Date.now()) : 0;
      setConnection(
        "reconnecting",
        wait > 0 ? "Reconnecting in " + Math.ceil(wait / 1000) + " s…" : "Reconnecting…"
      );
    };
    tick();
    countdownTimer = setInterval(tick, 500);
  }

  // Full jitter over an exponential window, capped (the extension's own grows to 64 s).
  htmx.config.wsReconnectDelay = function (retryCount) {
    var windowMs = Math.min(RECONNECT_CAP_MS, 1000 * Math.pow(2, retryCount));
    var delay = windowMs / 2 + (Math.random() * windowMs) / 2;
    state.nextAttemptAt = Date.now() + delay;
    return delay;
  };

  // The extension schedules a retry on every abnormal close, and a reconnect of ours (browser back
  // online, tab visible) does not cancel it: when that timer fired after we were connected again,
  // the extension closed the fresh socket (a 1005 close, taken for a final one: input disabled)
  // and opened another. So its (re)init does nothing while a socket is connecting or open.
  function socketWrapper() {
    var data = roomElt["htmx-internal-data"]; // where htmx 2 keeps the extension's wrapper
    var wrapper = data && data.webSocket;
    if (wrapper && !wrapper.calcroomsGuarded) {
      var init = wrapper.init;
      wrapper.init = function () {
        var s = this.socket;
        if (s && (s.readyState === WebSocket.CONNECTING || s.readyState === WebSocket.OPEN)) return;
        return init.apply(this, arguments);
      };
      wrapper.calcroomsGuarded = true;
    }
    return wrapper;
  }

  function reconnectNow() {
    if (state.open || state.closedForGood || !state.socket) return;
    state.nextAttemptAt = null;
    var wrapper = socketWrapper();
    if (wrapper) wrapper.init();
    else state.socket.reconnect();
  }
  window.addEventListener("online", reconnectNow);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") reconnectNow();
  });

  var CLOSE_REASONS = {
    4401: "Your session ended. Log in again to rejoin the room.",
    4403: "You no longer have access to this room.",
    1008: "Disconnected: too many refused messages. Reload the page to rejoin.",
    1009: "Disconnected: a message was too large. Reload the page to rejoin.",
  };
  var RECONNECT_CODES = [1006, 1011, 1012, 1013];

  document.addEventListener("htmx:wsConnecting", function () {
    if (!state.open && state.opens === 0) setConnection("connecting", "Connecting…");
  });

  document.addEventListener("htmx:wsOpen", function (evt) {
    state.socket = evt.detail.socketWrapper;
    socketWrapper();
    state.open = true;
    state.opens += 1;
    state.nextAttemptAt = null;
    setConnection("connected", "Connected");
    catchUp(state.opens > 1);
  });

  document.addEventListener("htmx:wsClose", function (evt) {
    state.socket = evt.detail.socketWrapper;
    socketWrapper();
    state.open = false;
    state.typingActive = false;
    var code = evt.detail.event.code;
    if (RECONNECT_CODES.indexOf(code) >= 0) {
      showReconnecting();
      return;
    }
    state.closedForGood = true;
    var reason = CLOSE_REASONS[code] || "Disconnected. Reload the page to rejoin.";
    setConnection(code >= 4400 && code < 4500 ? "ended" : "closed", reason);
    input.disabled = true;
  });

  // --- Incoming frames --------------------------------------------------------------------------

  function parseFragment(html) {
    var template = document.createElement("template");
    template.innerHTML = html;
    return template.content;
  }

  document.addEventListener("htmx:wsBeforeMessage", function (evt) {
    var message = evt.detail.message;
    if (typeof message !== "string") return;
    if (message.indexOf('<div id="entries"') === 0) {
      evt.preventDefault();
      parseFragment(message)
        .querySelectorAll("article[data-seq]")
        .forEach(function (article) {
          receiveLive(article);
        });
    } else if (message.indexOf('<div id="sync"') === 0) {
      evt.preventDefault();
      var sync = parseFragment(message).firstElementChild;
      var lastSeq = parseInt(sync.dataset.lastSeq, 10);
      if (lastSeq > state.lastSeq) catchUp(false);
    } else if (message.indexOf('<div id="errors"') === 0) {
      var error = parseFragment(message).querySelector("[data-code]");
      if (error) onError(error.dataset.code, error.dataset.clientId);
    }
  });

  function onError(code, clientId) {
    // Refused submissions were not stored: drop them from pending (the person sees why).
    // `unavailable` means the server could not store it now: keep it for the next reconnect.
    if (clientId && code !== "unavailable" && state.pending.has(clientId)) {
      // Give the refused expression back to its author to fix or send again.
      var refused = JSON.parse(state.pending.get(clientId));
      state.pending.delete(clientId);
      if (!input.value) input.value = refused.expression;
    }
    clearTimeout(onError.timer);
    onError.timer = setTimeout(function () {
      errorsElt.innerHTML = "";
    }, 6000);
  }

  function receiveLive(article) {
    var seq = parseInt(article.dataset.seq, 10);
    if (!(seq > state.lastSeq) || state.held.has(seq)) return; // already shown or held
    state.held.set(seq, article);
    if (!state.fetching) drain();
  }

  // Apply held entries while they are next in line; a hole means we missed something.
  function drain() {
    var applied = 0;
    while (state.held.has(state.lastSeq + 1)) {
      var next = state.held.get(state.lastSeq + 1);
      state.held.delete(state.lastSeq + 1);
      apply(next);
      applied += 1;
    }
    state.held.forEach(function (_article, seq) {
      if (seq <= state.lastSeq) state.held.delete(seq);
    });
    if (state.held.size > 0) catchUp(false);
    return applied;
  }

  function apply(article) {
    var seq = parseInt(article.dataset.seq, 10);
    if (seq !== state.lastSeq + 1 || document.getElementById("entry-" + seq)) return false;
    var stick = isNearBottom();
    localizeTime(article);
    if (article.dataset.author === config.username && article.dataset.clientId) {
      state.pending.delete(article.dataset.clientId);
      article.classList.add("mine");
    }
    entriesElt.appendChild(article);
    state.lastSeq = seq;
    entriesElt.dataset.lastSeq = String(seq);
    if (stick) article.scrollIntoView({ block: "end" });
    return true;
  }

  function localizeTime(article) {
    var time = article.querySelector("time[datetime]");
    if (time) {
      var when = new Date(time.getAttribute("datetime"));
      if (!isNaN(when)) time.textContent = when.toLocaleTimeString();
    }
  }

  function isNearBottom() {
    var scroller = document.scrollingElement || document.documentElement;
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120;
  }

  // --- Catch-up over HTTP ---------------------------------------------------------------------------

  function fetchAfter(after) {
    var url = config.entriesUrl + "?after=" + after + "&limit=" + PAGE_LIMIT;
    return fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" }).then(
      function (response) {
        if (!response.ok) throw new Error("catch-up failed: HTTP " + response.status);
        var hasMore = response.headers.get("X-Has-More") === "true";
        return response.text().then(function (html) {
          return { articles: parseFragment(html).querySelectorAll("article[data-seq]"), hasMore: hasMore };
        });
      }
    );
  }

  function catchUp(afterReconnect) {
    if (state.fetching) {
      state.fetchAgain = true;
      return;
    }
    state.fetching = true;
    var caughtUp = 0;
    var step = function () {
      return fetchAfter(state.lastSeq).then(function (page) {
        page.articles.forEach(function (article) {
          var seq = parseInt(article.dataset.seq, 10);
          if (seq === state.lastSeq + 1) {
            if (apply(article)) caughtUp += 1;
          }
        });
        if (page.hasMore && page.articles.length) return step();
      });
    };
    step()
      .then(
        function () {
          state.fetching = false;
          caughtUp += drain();
          if (afterReconnect) showAway(caughtUp);
          resendPending();
          if (state.fetchAgain) {
            state.fetchAgain = false;
            catchUp(false);
          }
        },
        function () {
          state.fetching = false;
          // The socket is up but HTTP failed (server busy?): try again shortly.
          setTimeout(function () {
            if (state.open) catchUp(afterReconnect);
          }, 2000);
        }
      );
  }

  function showAway(count) {
    awayElt.hidden = false;
    awayElt.textContent =
      count === 0
        ? "Back online: nothing new while you were away."
        : "You were away: " + count + " new " + (count === 1 ? "entry" : "entries") + ".";
    clearTimeout(showAway.timer);
    showAway.timer = setTimeout(function () {
      awayElt.hidden = true;
    }, 8000);
  }

  // --- Sending ----------------------------------------------------------------------------------------

  function newClientId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "10000000-1000-4000-8000-100000000000".replace(/[018]/g, function (c) {
      return (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16);
    });
  }

  function sendNow(body) {
    if (!state.open || !state.socket) return false;
    try {
      state.socket.sendImmediately(body);
      return true;
    } catch (e) {
      return false;
    }
  }

  function resendPending() {
    state.pending.forEach(function (body) {
      sendNow(body);
    });
  }

  // The extension sends on submit; we take over (below), so the form must never navigate.
  form.addEventListener("submit", function (evt) {
    evt.preventDefault();
  });

  document.addEventListener("htmx:wsConfigSend", function (evt) {
    if (evt.target !== form) return;
    evt.preventDefault(); // we send (and keep pending) ourselves, so nothing is sent twice
    var expression = input.value;
    if (!expression.trim()) return;
    var clientId = newClientId();
    var body = JSON.stringify({ type: "expression", expression: expression, client_id: clientId });
    state.pending.set(clientId, body);
    input.value = "";
    state.typingActive = false;
    sendNow(body); // when closed: sent after the reconnect's catch-up
  });

  input.addEventListener("input", function () {
    var now = Date.now();
    if (!input.value) {
      if (state.typingActive) sendNow(JSON.stringify({ type: "typing.stop" }));
      state.typingActive = false;
      return;
    }
    if (now - state.typingSentAt >= TYPING_INTERVAL_MS || !state.typingActive) {
      if (sendNow(JSON.stringify({ type: "typing" }))) {
        state.typingSentAt = now;
        state.typingActive = true;
      }
    }
  });
  input.addEventListener("blur", function () {
    if (state.typingActive) sendNow(JSON.stringify({ type: "typing.stop" }));
    state.typingActive = false;
  });

  // --- Older history -------------------------------------------------------------------------------

  var olderButton = document.getElementById("load-older");
  function loadOlder() {
    if (!olderButton || olderButton.disabled) return;
    olderButton.disabled = true;
    var url = config.entriesUrl + "?before=" + olderButton.dataset.before + "&limit=50";
    fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        var hasMore = response.headers.get("X-Has-More") === "true";
        return response.text().then(function (html) {
          var scroller = document.scrollingElement || document.documentElement;
          var fromBottom = scroller.scrollHeight - scroller.scrollTop;
          var fragment = parseFragment(html);
          var articles = fragment.querySelectorAll("article[data-seq]");
          articles.forEach(localizeTime);
          if (articles.length) olderButton.dataset.before = articles[0].dataset.seq;
          entriesElt.insertBefore(fragment, entriesElt.firstChild);
          scroller.scrollTop = scroller.scrollHeight - fromBottom;
          if (!hasMore || !articles.length) olderButton.remove();
          olderButton.disabled = false;
        });
      })
      .catch(function () {
        olderButton.disabled = false;
      });
  }
  if (olderButton) {
    olderButton.addEventListener("click", loadOlder);
    if ("IntersectionObserver" in window) {
      new IntersectionObserver(function (seen) {
        if (seen[0].isIntersecting && state.opens > 0) loadOlder();
      }).observe(olderButton);
    }
  }

  entriesElt.querySelectorAll("article[data-seq]").forEach(localizeTime);
  var last = entriesElt.lastElementChild;
  if (last) last.scrollIntoView({ block: "end" });
  roomElt.dataset.ready = "true";
})();
