/*
 * room.js: what the htmx ws extension needs help with on the room page.
 *
 * - Catch-up merge: on every (re)open of the socket the live subscription is already running; we
 *   then fetch `entries/?after=<last seq>` over HTTP, hold live entries that arrive meanwhile, and
 *   apply everything in seq order, each seq exactly once. A live entry that skips a seq, or a `sync`
 *   frame that is ahead, triggers the same fetch. The channel layer is at-most-once; this merge is
 *   what makes the room exactly-once and ordered.
 * - Connection truth: a socket that says nothing for `connectionDeadAfterMs` (the server's `sync`
 *   is the heartbeat) is given up and replaced, and the browser's `offline` event gives it up at
 *   once. `#connection` says connecting / connected / reconnecting / offline / ended, and a notice
 *   above the input says what that means for what you type. Reconnects back off with jitter, capped,
 *   and happen at once when the browser is back online or the tab becomes visible. A 44xx, 1008 or
 *   1009 close ends the room for this page: a banner replaces the input, with the way out.
 * - The outbox: every submission is shown at once as a `.pending` row ("sending…") with its
 *   client_id, kept in sessionStorage (so it survives a reload) until its stored entry replaces it.
 *   Each is sent once per connection, after that connection's catch-up, paced by a copy of the
 *   server's token bucket; `rate_limited` and `unavailable` mean "send it again later" (jittered
 *   backoff), never "drop it". A refused one (too long, empty) stays as a `.refused` row with its
 *   reason and an Edit button.
 * - The log (`#entries`) is its own scroll area: at the bottom it stays at the bottom (new entries,
 *   notices and header changes included); scrolled up, nothing moves you and `#jump-new` counts
 *   what arrived below.
 * - Keyboard: focus starts in the input, ↑/↓ recall your own expressions in this room (from the
 *   server's history, a page at a time), Escape clears, `/` anywhere else focuses the input.
 * - Typing frames (at most every `typingIntervalMs` while the input changes, and typing.stop).
 *
 * Every timing and limit comes from the server (project/settings.py) in the room's config.
 */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("room-config").textContent);
  var roomElt = document.getElementById("room");
  var entriesElt = document.getElementById("entries");
  var outboxElt = document.getElementById("outbox");
  var connectionElt = document.getElementById("connection");
  var noticesElt = document.getElementById("notices");
  var jumpElt = document.getElementById("jump-new");
  var input = document.getElementById("expression");
  var form = document.getElementById("compose");

  var SECOND_MS = 1000; // a unit, not a tuning: the config's rates are per second
  var FIRST_SEQ_SHOWN = config.lastSeq || 0; // own entries up to here come from the server's history

  var state = {
    lastSeq: config.lastSeq || 0, // every seq <= lastSeq is shown, exactly once
    held: new Map(), // seq -> element, live entries waiting for their turn
    fetching: false,
    fetchAgain: false,
    againAfterReconnect: false,
    fetchFailures: 0,
    typingSentAt: 0,
    typingActive: false,
  };

  function jittered(minMs, capMs, attempt) {
    // Full jitter over the upper half of an exponential window: never 0, never above the cap.
    var windowMs = Math.min(capMs, minMs * Math.pow(2, attempt));
    return windowMs / 2 + (Math.random() * windowMs) / 2;
  }

  function parseFragment(html) {
    var template = document.createElement("template");
    template.innerHTML = html;
    return template.content;
  }

  // --- Notices (just above the input; each stays until it stops applying or is dismissed) ---------

  function notice(key, kind, text, options) {
    options = options || {};
    var box = noticesElt.querySelector('[data-notice="' + key + '"]');
    if (!box) {
      box = document.createElement("div");
      box.className = "notice";
      box.dataset.notice = key;
      var body = document.createElement("span");
      body.className = "notice-text";
      box.appendChild(body);
      if (options.action) {
        var action = document.createElement("button");
        action.type = "button";
        action.className = "notice-action";
        action.textContent = options.action;
        action.addEventListener("click", options.onAction);
        box.appendChild(action);
      }
      var dismiss = document.createElement("button");
      dismiss.type = "button";
      dismiss.className = "dismiss";
      dismiss.setAttribute("aria-label", "Dismiss");
      dismiss.textContent = "×";
      dismiss.addEventListener("click", function () {
        box.remove();
      });
      box.appendChild(dismiss);
      noticesElt.appendChild(box);
    }
    box.dataset.kind = kind;
    box.setAttribute("role", kind === "error" ? "alert" : "status");
    if (options.code) box.dataset.code = options.code;
    else delete box.dataset.code;
    box.querySelector(".notice-text").textContent = text;
    return box;
  }

  function clearNotice(key) {
    var box = noticesElt.querySelector('[data-notice="' + key + '"]');
    if (box) box.remove();
  }

  // --- The log as a scroll area ----------------------------------------------------------------------

  var scroll = {
    stuck: true, // at the bottom: stay there whatever changes
    ownTop: -1, // the scrollTop we set ourselves (its scroll event is not the person scrolling)
    unseen: 0,
  };

  function atBottom() {
    // Within a pixel: scroll positions are fractional under zoom.
    return entriesElt.scrollHeight - entriesElt.scrollTop - entriesElt.clientHeight <= 1;
  }

  function toBottom() {
    entriesElt.scrollTop = entriesElt.scrollHeight;
    scroll.ownTop = entriesElt.scrollTop;
    scroll.stuck = true;
    allSeen();
  }

  function allSeen() {
    scroll.unseen = 0;
    jumpElt.hidden = true;
  }

  function arrived() {
    if (scroll.stuck) return; // the mutation observer keeps the bottom in view
    scroll.unseen += 1;
    jumpElt.textContent = scroll.unseen + " new ↓";
    jumpElt.setAttribute(
      "aria-label",
      scroll.unseen + " new " + (scroll.unseen === 1 ? "entry" : "entries") + " below: show"
    );
    jumpElt.hidden = false;
  }

  entriesElt.addEventListener(
    "scroll",
    function () {
      if (atBottom()) {
        scroll.stuck = true;
        allSeen();
      } else if (Math.abs(entriesElt.scrollTop - scroll.ownTop) >= 1) {
        scroll.stuck = false; // the person scrolled up
        scroll.ownTop = -1;
      }
    },
    { passive: true }
  );

  jumpElt.addEventListener("click", function () {
    toBottom();
    if (!form.hidden) input.focus({ preventScroll: true });
  });

  // Whatever changes the log's content (entries, rows, times, result decorations) or its size
  // (notices, the header's people, the window): at the bottom, stay at the bottom.
  new MutationObserver(function () {
    if (scroll.stuck) toBottom();
  }).observe(entriesElt, { childList: true, subtree: true, characterData: true });
  if ("ResizeObserver" in window) {
    new ResizeObserver(function () {
      if (scroll.stuck) toBottom();
    }).observe(entriesElt);
  }

  // --- Connection: state, watchdog, reconnecting -------------------------------------------------------

  var conn = {
    socket: null, // the WebSocket in use; null once given up (its late frames are ignored)
    open: false,
    opens: 0, // connections opened so far
    caughtUpOn: 0, // the connection whose catch-up is done: sending waits for it
    ended: false,
    deadTimer: null,
    lastHeardAt: 0,
    nextAttemptAt: null,
    retries: 0, // our own retries, for closes the extension does not retry
  };

  function setConnection(kind, text) {
    connectionElt.dataset.state = kind;
    connectionElt.textContent = text;
  }

  // Every socket the extension opens is made here, so we hear its frames first: a frame of a socket
  // we gave up on goes no further, and any frame of the live one proves it alive.
  htmx.createWebSocket = function (url) {
    var socket = new WebSocket(url, []);
    socket.binaryType = htmx.config.wsBinaryType;
    conn.socket = socket;
    socket.addEventListener("message", function (evt) {
      if (socket !== conn.socket) {
        evt.stopImmediatePropagation();
        return;
      }
      heard();
    });
    watch(); // a handshake that hangs is as dead as a silent socket
    return socket;
  };

  function watch() {
    clearTimeout(conn.deadTimer);
    conn.deadTimer = setTimeout(function () {
      giveUp();
    }, config.connectionDeadAfterMs);
  }

  function heard() {
    conn.lastHeardAt = Date.now();
    watch();
  }

  // Full jitter over an exponential window, capped (the extension's own grows to 64 s).
  htmx.config.wsReconnectDelay = function (retryCount) {
    var delay = jittered(config.reconnectMinMs, config.reconnectCapMs, retryCount);
    conn.nextAttemptAt = Date.now() + delay;
    return delay;
  };

  // The extension schedules a retry on every abnormal close, and a reconnect of ours does not
  // cancel it: so its (re)init does nothing after the end or while a socket is on its way (a
  // stale timer would otherwise close the fresh socket and open another). Ours goes through
  // `calcroomsInit`, the extension's own init.
  function socketWrapper() {
    var data = roomElt["htmx-internal-data"]; // where htmx 2 keeps the extension's wrapper
    var wrapper = data && data.webSocket;
    if (wrapper && !wrapper.calcroomsInit) {
      var init = wrapper.init;
      wrapper.calcroomsInit = function () {
        return init.apply(wrapper, arguments);
      };
      wrapper.init = function () {
        if (conn.ended || socketBusy()) return;
        return init.apply(this, arguments);
      };
    }
    return wrapper;
  }

  function socketBusy() {
    var s = conn.socket;
    return !!s && (s.readyState === WebSocket.CONNECTING || s.readyState === WebSocket.OPEN);
  }

  function connectNow() {
    if (conn.ended || socketBusy()) return;
    var wrapper = socketWrapper();
    if (!wrapper) return;
    conn.nextAttemptAt = null;
    wrapper.calcroomsInit();
  }

  // The socket is dead (silent too long, or the browser went offline) though nothing closed it:
  // stop listening to it, say so, and open another.
  function giveUp() {
    if (conn.ended) return;
    var socket = conn.socket;
    conn.socket = null;
    clearTimeout(conn.deadTimer);
    if (socket) {
      socket.onopen = socket.onclose = socket.onerror = null;
      try {
        socket.close();
      } catch (e) {
        /* already closing */
      }
    }
    conn.open = false;
    state.typingActive = false;
    showProblem();
    connectNow();
  }

  var countdownTimer = null;
  function showProblem() {
    clearTimeout(countdownTimer);
    if (conn.open || conn.ended) return;
    if (navigator.onLine === false) {
      setConnection("offline", "Offline");
      notice(
        "connection",
        "warn",
        "You are offline. What you type is kept and sent when you are back online."
      );
      return;
    }
    var wait = conn.nextAttemptAt ? Math.max(0, conn.nextAttemptAt - Date.now()) : 0;
    setConnection(
      "reconnecting",
      wait > 0 ? "Reconnecting in " + Math.ceil(wait / SECOND_MS) + " s…" : "Reconnecting…"
    );
    notice(
      "connection",
      "warn",
      "Connection lost: reconnecting. What you type is kept and sent when it is back.",
      { action: "Reconnect now", onAction: reconnectAtOnce }
    );
    if (wait > 0) countdownTimer = setTimeout(showProblem, wait % SECOND_MS || SECOND_MS);
  }

  function reconnectAtOnce() {
    var wrapper = socketWrapper();
    if (wrapper) wrapper.retryCount = 0;
    conn.retries = 0;
    connectNow();
    showProblem();
  }

  window.addEventListener("online", reconnectAtOnce);
  window.addEventListener("offline", giveUp);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState !== "visible" || conn.ended) return;
    // Timers of a hidden tab run late: check the heartbeat now.
    if (conn.open && Date.now() - conn.lastHeardAt > config.connectionDeadAfterMs) giveUp();
    else if (!conn.open) reconnectAtOnce();
  });

  var RETRIED_BY_EXTENSION = [1006, 1011, 1012, 1013];
  var ENDINGS = {
    4401: {
      status: "Session ended",
      text: "Your session ended (you were logged out, or your password changed).",
      action: "Log in again",
      href: config.loginUrl,
    },
    4403: {
      status: "No access",
      text: "You no longer have access to this room.",
      action: "Back to your rooms",
      href: config.roomsUrl,
    },
    1008: {
      status: "Disconnected",
      text: "Disconnected: too many refused messages.",
      action: "Reload",
    },
    1009: { status: "Disconnected", text: "Disconnected: a message was too large.", action: "Reload" },
    other: { status: "Disconnected", text: "Disconnected from the room.", action: "Reload" },
  };

  function isFinal(code) {
    return code === 1008 || code === 1009 || (code >= 4000 && code < 5000);
  }

  document.addEventListener("htmx:wsConnecting", function () {
    if (!conn.open && conn.opens === 0) setConnection("connecting", "Connecting…");
  });

  document.addEventListener("htmx:wsOpen", function (evt) {
    if (evt.detail.event.target !== conn.socket) return;
    socketWrapper();
    conn.open = true;
    conn.opens += 1;
    conn.nextAttemptAt = null;
    conn.retries = 0;
    heard();
    clearTimeout(countdownTimer);
    setConnection("connected", "Connected");
    clearNotice("connection");
    catchUp(conn.opens > 1);
    pump(); // what was never sent goes now; resends wait for the catch-up
    markRead();
  });

  document.addEventListener("htmx:wsClose", function (evt) {
    var event = evt.detail.event;
    if (event.target !== conn.socket) return;
    socketWrapper();
    clearTimeout(conn.deadTimer);
    conn.open = false;
    state.typingActive = false;
    if (isFinal(event.code)) {
      end(event.code);
      return;
    }
    if (RETRIED_BY_EXTENSION.indexOf(event.code) < 0) {
      // A close the extension leaves alone (1000, 1001, 1005…): the room is not over, retry.
      setTimeout(connectNow, htmx.config.wsReconnectDelay(conn.retries++));
    }
    showProblem();
  });

  function end(code) {
    conn.ended = true;
    clearTimeout(countdownTimer);
    var ending = ENDINGS[code] || ENDINGS.other;
    setConnection("ended", ending.status);
    clearNotice("connection");
    var banner = document.createElement("div");
    banner.id = "ended";
    banner.className = "ended";
    banner.setAttribute("role", "alert");
    banner.dataset.code = String(code);
    var text = document.createElement("p");
    text.textContent = ending.text;
    var action;
    if (ending.href) {
      action = document.createElement("a");
      action.href = ending.href;
    } else {
      action = document.createElement("button");
      action.type = "button";
      action.addEventListener("click", function () {
        location.reload();
      });
    }
    action.className = "button";
    action.textContent = ending.action;
    banner.append(text, action);
    var hadFocus = document.activeElement === input;
    form.hidden = true;
    form.parentNode.insertBefore(banner, form);
    if (hadFocus) action.focus();
    outbox.forEach(renderRow); // what is still pending says it was not sent
  }

  // --- Incoming frames --------------------------------------------------------------------------

  document.addEventListener("htmx:wsBeforeMessage", function (evt) {
    var message = evt.detail.message;
    if (typeof message !== "string") return;
    if (message.indexOf('<div id="entries"') === 0) {
      evt.preventDefault();
      parseFragment(message)
        .querySelectorAll("article[data-seq]")
        .forEach(receiveLive);
    } else if (message.indexOf('<div id="sync"') === 0) {
      evt.preventDefault();
      var sync = parseFragment(message).firstElementChild;
      var lastSeq = parseInt(sync.dataset.lastSeq, 10);
      if (lastSeq > state.lastSeq) catchUp(false);
    } else if (message.indexOf('<div id="errors"') === 0) {
      evt.preventDefault();
      var error = parseFragment(message).querySelector("[data-code]");
      if (error) onRefusal(error.dataset.code, error.dataset.clientId || null, error.textContent);
    }
  });

  function receiveLive(article) {
    var seq = parseInt(article.dataset.seq, 10);
    if (!(seq > state.lastSeq)) {
      // Shown already (or older than this page): a resend answered with its stored entry.
      settled(article);
      return;
    }
    if (state.held.has(seq)) return;
    state.held.set(seq, article);
    if (!state.fetching) drain();
  }

  // Apply held entries while they are next in line; a hole means we missed something. Returns how
  // many were new to this page (not the stored entries of its own outbox).
  function drain() {
    var applied = 0;
    while (state.held.has(state.lastSeq + 1)) {
      var next = state.held.get(state.lastSeq + 1);
      state.held.delete(state.lastSeq + 1);
      var ours = fromOutbox(next);
      if (apply(next) && !ours) applied += 1;
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
    prepare(article);
    entriesElt.insertBefore(article, outboxElt); // stored entries above what is not stored yet
    state.lastSeq = seq;
    entriesElt.dataset.lastSeq = String(seq);
    if (isMine(article)) {
      recallAdd(recallKey(article.dataset.clientId, seq), article.querySelector(".expression"));
      settled(article);
    }
    arrived();
    if (document.visibilityState === "hidden" && seq > reading.hiddenAt) {
      reading.away += 1;
      showTitle();
    }
    markRead();
    return true;
  }

  // --- Read position and the hidden tab's title ----------------------------------------------------

  // The server keeps how far this person has read (`Membership.last_read_seq`): while the page is
  // visible it advances to the newest entry shown (a `read` frame, at most one a second). While
  // the tab is hidden its title counts the entries that arrived since it was hidden.
  var reading = {
    sent: config.lastReadSeq || 0, // the read position the server has (or was last sent)
    timer: null,
    hiddenAt: 0, // state.lastSeq when the tab was hidden
    away: 0,
    title: document.title,
  };

  function showTitle() {
    document.title = reading.away > 0 ? "(" + reading.away + ") " + reading.title : reading.title;
  }

  function markRead() {
    if (reading.timer || document.visibilityState !== "visible") return;
    if (!(state.lastSeq > reading.sent)) return;
    reading.timer = setTimeout(function () {
      reading.timer = null;
      if (document.visibilityState !== "visible" || !(state.lastSeq > reading.sent)) return;
      var seq = state.lastSeq;
      if (sendFrame({ type: "read", seq: seq })) reading.sent = seq;
    }, SECOND_MS);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") {
      reading.hiddenAt = state.lastSeq;
      reading.away = 0;
    } else {
      reading.away = 0;
      showTitle();
      markRead();
    }
  });

  function isMine(article) {
    return article.dataset.author === config.username;
  }

  function fromOutbox(article) {
    return isMine(article) && !!article.dataset.clientId && outbox.has(article.dataset.clientId);
  }

  function prepare(article) {
    var time = article.querySelector("time[datetime]");
    if (time && window.CalcroomsTimes) {
      window.CalcroomsTimes.format(time); // the viewer's zone, the exact time on hover
    } else if (time) {
      var when = new Date(time.getAttribute("datetime"));
      if (!isNaN(when)) time.textContent = when.toLocaleTimeString();
    }
    if (isMine(article)) {
      article.classList.add("mine");
      article.dataset.mine = "";
    }
  }

  // --- Catch-up over HTTP ---------------------------------------------------------------------------

  function fetchPage(url, accept) {
    var options = { headers: { Accept: accept }, credentials: "same-origin" };
    // A request on a dead network path would hang as long as a dead socket: give it up as soon.
    if (window.AbortSignal && AbortSignal.timeout) {
      options.signal = AbortSignal.timeout(config.connectionDeadAfterMs);
    }
    return fetch(url, options).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status + " from " + url);
      return response;
    });
  }

  function fetchAfter(after) {
    var url = config.entriesUrl + "?after=" + after + "&limit=" + config.pageLimit;
    return fetchPage(url, "text/html").then(function (response) {
      var hasMore = response.headers.get("X-Has-More") === "true";
      return response.text().then(function (html) {
        return { articles: parseFragment(html).querySelectorAll("article[data-seq]"), hasMore: hasMore };
      });
    });
  }

  function catchUp(afterReconnect) {
    if (state.fetching) {
      state.fetchAgain = true;
      state.againAfterReconnect = state.againAfterReconnect || afterReconnect;
      return;
    }
    state.fetching = true;
    var connection = conn.opens;
    var caughtUp = 0;
    var step = function () {
      return fetchAfter(state.lastSeq).then(function (page) {
        page.articles.forEach(function (article) {
          var seq = parseInt(article.dataset.seq, 10);
          if (seq === state.lastSeq + 1) {
            var ours = fromOutbox(article); // what you sent is not news to you
            if (apply(article) && !ours) caughtUp += 1;
          }
        });
        if (page.hasMore && page.articles.length) return step();
      });
    };
    step().then(
      function () {
        state.fetching = false;
        state.fetchFailures = 0;
        caughtUp += drain();
        if (afterReconnect) showAway(caughtUp);
        if (conn.open && conn.opens === connection) {
          conn.caughtUpOn = connection;
          roomElt.dataset.caughtUp = String(connection); // a hook: this connection is caught up
          pump();
        }
        if (state.fetchAgain) {
          var again = state.againAfterReconnect;
          state.fetchAgain = state.againAfterReconnect = false;
          catchUp(again);
        }
      },
      function () {
        state.fetching = false;
        // The server stores a client_id once: holding resends back for a catch-up that cannot
        // happen now would only hold back what was typed.
        if (conn.open && conn.opens === connection) {
          conn.caughtUpOn = connection;
          pump();
        }
        // The socket is up but HTTP failed (server busy? the path dead?): try again, backing off.
        var delay = jittered(config.reconnectMinMs, config.reconnectCapMs, state.fetchFailures++);
        setTimeout(function () {
          if (conn.open) catchUp(afterReconnect || state.againAfterReconnect);
        }, delay);
      }
    );
  }

  function showAway(count) {
    notice(
      "catch-up",
      "info",
      count === 0
        ? "Back online: nothing new while you were away."
        : "You were away: " + count + " new " + (count === 1 ? "entry" : "entries") + "."
    );
  }

  // --- The outbox: what you typed until it is stored ---------------------------------------------

  // client_id -> {clientId, expression, status: "sending" | "waiting" | "refused", sentOn, code,
  // reason, row}. In the order typed; sent in that order.
  var outbox = new Map();
  var sending = {
    tokens: config.expressionBucketCapacity, // our copy of the server's bucket for us in this room
    tokensAt: Date.now(),
    holdUntil: 0, // after a rate_limited / unavailable answer: nothing is sent before this
    failures: 0,
    timer: null,
    inFlight: null, // the client_id sent and not answered yet: one at a time keeps the order
  };
  var STORE_KEY = "calcrooms:outbox:" + config.room + ":" + config.username;

  function save() {
    try {
      if (!outbox.size) {
        sessionStorage.removeItem(STORE_KEY);
        return;
      }
      var kept = [];
      outbox.forEach(function (item) {
        kept.push({
          client_id: item.clientId,
          expression: item.expression,
          status: item.status === "refused" ? "refused" : "sending",
          code: item.status === "refused" ? item.code : null,
          reason: item.status === "refused" ? item.reason : null,
        });
      });
      sessionStorage.setItem(STORE_KEY, JSON.stringify(kept));
    } catch (e) {
      /* storage full or disabled: the rows still show, they just will not outlive the tab */
    }
  }

  function restore() {
    var kept = [];
    try {
      kept = JSON.parse(sessionStorage.getItem(STORE_KEY) || "[]");
    } catch (e) {
      kept = [];
    }
    kept.forEach(function (record) {
      if (!record || typeof record.client_id !== "string" || typeof record.expression !== "string") {
        return;
      }
      if (shownAsEntry(record.client_id)) return; // stored while the page was away
      var item = {
        clientId: record.client_id,
        expression: record.expression,
        status: record.status === "refused" ? "refused" : "sending",
        sentOn: 0,
        everSent: true, // perhaps, before the reload: the catch-up may show it stored
        code: record.code || null,
        reason: record.reason || null,
      };
      outbox.set(item.clientId, item);
      renderRow(item);
      recallAdd(recallKey(item.clientId), item.expression);
    });
    save();
  }

  function shownAsEntry(clientId) {
    var selector =
      'article[data-client-id="' + CSS.escape(clientId) + '"][data-author="' + CSS.escape(config.username) + '"]';
    return !!entriesElt.querySelector(selector);
  }

  function renderRow(item) {
    var row = item.row;
    if (!row) {
      row = item.row = document.createElement("div");
      row.dataset.clientId = item.clientId;
      outboxElt.appendChild(row);
    }
    var refused = item.status === "refused";
    row.className = refused ? "refused" : "pending";
    row.dataset.status = item.status;
    if (item.code) row.dataset.code = item.code;
    else delete row.dataset.code;
    var author = document.createElement("span");
    author.className = "author";
    author.textContent = config.username;
    var expression = document.createElement("code");
    expression.className = "expression";
    expression.textContent = item.expression;
    var status = document.createElement("span");
    status.className = "status";
    status.textContent = refused ? "not sent:" : conn.ended ? "not sent" : "sending…";
    row.replaceChildren(author, expression, status);
    if (refused) {
      var reason = document.createElement("span");
      reason.className = "reason";
      reason.textContent = item.reason || "refused";
      var edit = document.createElement("button");
      edit.type = "button";
      edit.className = "edit";
      edit.textContent = "Edit";
      edit.addEventListener("click", function () {
        editRefused(item);
      });
      var dismiss = document.createElement("button");
      dismiss.type = "button";
      dismiss.className = "dismiss";
      dismiss.textContent = "Dismiss";
      dismiss.setAttribute("aria-label", "Dismiss this refused expression");
      dismiss.addEventListener("click", function () {
        forget(item.clientId);
        if (!form.hidden) input.focus({ preventScroll: true });
      });
      row.append(reason, edit, dismiss);
    } else if (item.status === "waiting" && !conn.ended) {
      var note = document.createElement("span");
      note.className = "reason";
      note.textContent = item.code === "rate_limited" ? "(waiting: slow down)" : "(waiting: server busy)";
      row.appendChild(note);
    }
  }

  function forget(clientId) {
    var item = outbox.get(clientId);
    if (!item) return;
    outbox.delete(clientId);
    if (item.row) item.row.remove();
    save();
    showWaiting();
    if (sending.inFlight === clientId) {
      sending.inFlight = null;
      pump(); // answered: the next one goes
    }
  }

  // Its stored entry is shown (or older than this page): the row has done its job.
  function settled(article) {
    var clientId = article.dataset.clientId;
    if (!clientId || !isMine(article) || !outbox.has(clientId)) return;
    sending.failures = 0;
    forget(clientId);
  }

  function editRefused(item) {
    outbox.forEach(function (other) {
      other.editing = false;
    });
    item.editing = true; // the row stays until the edited expression is sent
    input.value = item.expression;
    recall.index = null;
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }

  function refuse(item, code, reason) {
    if (sending.inFlight === item.clientId) sending.inFlight = null;
    item.status = "refused";
    item.code = code;
    item.reason = reason;
    renderRow(item);
    save();
    notice("refused", "error", "Not sent: " + reason + " Edit it in the log and send it again.", {
      code: code,
    });
    showWaiting();
    pump();
  }

  function onRefusal(code, clientId, message) {
    var item = clientId ? outbox.get(clientId) : null;
    if (code === "rate_limited" || code === "unavailable") {
      // Not stored now, but nothing wrong with it: send it again later.
      if (item) {
        if (sending.inFlight === item.clientId) sending.inFlight = null;
        item.sentOn = 0;
        item.status = "waiting";
        item.code = code;
        renderRow(item);
      }
      if (code === "rate_limited") sending.tokens = 0; // the server's bucket is empty, so is ours
      holdSending();
      showWaiting(message);
      return;
    }
    if (item) {
      refuse(item, code, message);
      return;
    }
    notice("refused", "error", message, { code: code });
  }

  function holdSending() {
    var now = Date.now();
    if (now >= sending.holdUntil) {
      // One step of backoff per round of refusals (all those in flight answer the same).
      sending.holdUntil = now + jittered(config.resendMinMs, config.resendCapMs, sending.failures);
      sending.failures += 1;
    }
    pump();
  }

  function showWaiting(message) {
    var waiting = 0;
    var code = null;
    outbox.forEach(function (item) {
      if (item.status === "waiting") {
        waiting += 1;
        code = item.code;
      }
    });
    if (!waiting) {
      clearNotice("waiting");
      return;
    }
    var what = waiting + " " + (waiting === 1 ? "expression is" : "expressions are");
    var text =
      code === "rate_limited"
        ? (message || "Slow down: too many expressions.") + " " + what + " waiting and will be sent as the room allows."
        : "The server could not store that just now: " + what + " kept and will be sent again.";
    notice("waiting", "warn", text, { code: code });
  }

  // Take a token from our copy of the bucket: 0, or how long until there is one.
  function takeToken(now) {
    var capacity = config.expressionBucketCapacity;
    var rate = config.expressionRefillPerSecond;
    sending.tokens = Math.min(capacity, sending.tokens + ((now - sending.tokensAt) / SECOND_MS) * rate);
    sending.tokensAt = now;
    if (sending.tokens >= 1) {
      sending.tokens -= 1;
      return 0;
    }
    return rate > 0 ? Math.ceil(((1 - sending.tokens) / rate) * SECOND_MS) : config.resendCapMs;
  }

  function sendFrame(frame) {
    var socket = conn.socket;
    if (!conn.open || !socket || socket.readyState !== WebSocket.OPEN) return false;
    try {
      socket.send(JSON.stringify(frame));
      return true;
    } catch (e) {
      return false;
    }
  }

  // Send the first expression not yet sent on this connection, as the bucket allows; its answer
  // (its entry, or a refusal) sends the next. One at a time, so a refused one is never overtaken
  // by the next and the room stores them in the order typed (`ans` and variables depend on it).
  // What was sent on an earlier connection waits for this one's catch-up (which may show it
  // stored). Called on open, after a catch-up, on submit, on each answer, and by its own timer.
  function pump() {
    clearTimeout(sending.timer);
    sending.timer = null;
    if (!conn.open) return;
    var flying = sending.inFlight && outbox.get(sending.inFlight);
    if (flying && flying.sentOn === conn.opens) return;
    sending.inFlight = null; // sent on a connection that is gone: it is sent again below
    var now = Date.now();
    if (now < sending.holdUntil) {
      sending.timer = setTimeout(pump, sending.holdUntil - now);
      return;
    }
    var items = Array.from(outbox.values());
    for (var i = 0; i < items.length; i++) {
      var item = items[i];
      if (item.status === "refused" || item.sentOn === conn.opens) continue;
      if (item.everSent && conn.caughtUpOn !== conn.opens) return;
      var wait = takeToken(now);
      if (wait > 0) {
        sending.timer = setTimeout(pump, wait);
        return;
      }
      if (!sendFrame({ type: "expression", expression: item.expression, client_id: item.clientId })) return;
      item.sentOn = conn.opens;
      item.everSent = true;
      sending.inFlight = item.clientId;
      if (item.status === "waiting") {
        item.status = "sending";
        renderRow(item);
      }
      showWaiting();
      return;
    }
    showWaiting();
  }

  function newClientId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "10000000-1000-4000-8000-100000000000".replace(/[018]/g, function (c) {
      return (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16);
    });
  }

  function codePoints(text) {
    return Array.from(text).length; // what the server counts (JS's length counts UTF-16 units)
  }

  form.addEventListener("submit", function (evt) {
    evt.preventDefault();
    if (conn.ended) return;
    var expression = input.value;
    if (!expression.trim()) return;
    clearNotice("refused");
    clearNotice("catch-up");
    outbox.forEach(function (item) {
      if (item.editing) forget(item.clientId); // its edited text is what is sent now
    });
    var item = {
      clientId: newClientId(),
      expression: expression,
      status: "sending",
      sentOn: 0,
      everSent: false,
      code: null,
      reason: null,
    };
    outbox.set(item.clientId, item);
    renderRow(item);
    recallAdd(recallKey(item.clientId), expression);
    input.value = "";
    recall.index = null;
    recall.draft = "";
    toBottom(); // your result comes in at the bottom: be there
    var length = codePoints(expression);
    if (length > config.expressionMaxLength) {
      stopTyping();
      refuse(
        item,
        "too_long",
        "An expression is at most " + config.expressionMaxLength + " characters (this one has " + length + ")."
      );
      return;
    }
    state.typingActive = false; // storing it ends the typing indicator on the server
    save();
    pump();
  });

  // --- Typing -----------------------------------------------------------------------------------------

  function stopTyping() {
    if (state.typingActive) sendFrame({ type: "typing.stop" });
    state.typingActive = false;
  }

  input.addEventListener("input", function () {
    recall.index = null; // what is typed now is the draft
    var now = Date.now();
    if (!input.value) {
      stopTyping();
      return;
    }
    if (now - state.typingSentAt >= config.typingIntervalMs || !state.typingActive) {
      if (sendFrame({ type: "typing" })) {
        state.typingSentAt = now;
        state.typingActive = true;
      }
    }
  });
  input.addEventListener("blur", stopTyping);

  // --- ↑/↓ recall of your own expressions in this room ---------------------------------------------

  var recall = {
    items: [], // {key, expression}, oldest first: the server's history, then this page's
    keys: new Set(),
    before: FIRST_SEQ_SHOWN + 1, // the server's next page of your history is before this seq
    exhausted: false,
    loading: false,
    steps: 0, // ↑ presses waiting for a page to arrive
    index: null, // the item shown in the input; null: the draft
    draft: "",
  };

  function recallKey(clientId, seq) {
    return clientId ? "c:" + clientId : "s:" + seq;
  }

  function recallAdd(key, expression) {
    if (expression && typeof expression !== "string") expression = expression.textContent;
    if (!expression || recall.keys.has(key)) return;
    recall.keys.add(key);
    recall.items.push({ key: key, expression: expression });
  }

  function recallShow(index) {
    recall.index = index;
    input.value = index === null ? recall.draft : recall.items[index].expression;
    input.setSelectionRange(input.value.length, input.value.length);
  }

  function recallOlder() {
    if (recall.index === null) {
      recall.draft = input.value;
      recall.index = recall.items.length;
    }
    var i = recall.index - 1;
    while (i >= 0 && recall.items[i].expression === input.value) i -= 1; // skip repeats
    if (i >= 0) {
      recallShow(i);
      return;
    }
    if (recall.exhausted) return;
    recall.steps += 1;
    loadRecallPage();
  }

  function recallNewer() {
    if (recall.index === null) return;
    var i = recall.index + 1;
    while (i < recall.items.length && recall.items[i].expression === input.value) i += 1;
    recallShow(i < recall.items.length ? i : null);
  }

  function loadRecallPage() {
    if (recall.loading) return;
    recall.loading = true;
    var url =
      config.entriesUrl +
      "?format=json&before=" + recall.before +
      "&author=" + encodeURIComponent(config.username) +
      "&limit=" + config.pageEntries;
    fetchPage(url, "application/json")
      .then(function (response) {
        return response.json();
      })
      .then(function (page) {
        var older = [];
        page.entries.forEach(function (entry) {
          var key = recallKey(entry.client_id, entry.seq);
          if (recall.keys.has(key)) return;
          recall.keys.add(key);
          older.push({ key: key, expression: entry.expression });
        });
        if (page.entries.length) recall.before = page.entries[0].seq;
        recall.exhausted = !page.has_more || !page.entries.length;
        recall.items = older.concat(recall.items);
        if (recall.index !== null) recall.index += older.length;
        recall.loading = false;
        var steps = recall.steps;
        recall.steps = 0;
        while (steps-- > 0 && (older.length || recall.exhausted)) recallOlder();
      })
      .catch(function () {
        recall.loading = false;
        recall.steps = 0;
      });
  }

  // --- Keyboard ---------------------------------------------------------------------------------------

  input.addEventListener("keydown", function (evt) {
    if (evt.isComposing || evt.altKey || evt.ctrlKey || evt.metaKey || evt.shiftKey) return;
    if (evt.key === "ArrowUp") {
      evt.preventDefault();
      recallOlder();
    } else if (evt.key === "ArrowDown") {
      if (recall.index === null) return;
      evt.preventDefault();
      recallNewer();
    } else if (evt.key === "Escape") {
      if (!input.value && recall.index === null) return;
      evt.preventDefault();
      input.value = "";
      recall.index = null;
      recall.draft = "";
      outbox.forEach(function (item) {
        item.editing = false;
      });
      stopTyping();
    }
  });

  function isTextField(elt) {
    if (!elt || !elt.tagName) return false;
    if (elt.isContentEditable) return true;
    var tag = elt.tagName.toLowerCase();
    if (tag === "textarea" || tag === "select") return true;
    if (tag !== "input") return false;
    return ["button", "checkbox", "radio", "submit", "reset", "range", "color", "file", "image"].indexOf(elt.type) < 0;
  }

  // `/` from anywhere but a text field goes to the expression input (and is not typed there).
  document.addEventListener("keydown", function (evt) {
    if (evt.key !== "/" || evt.ctrlKey || evt.metaKey || evt.altKey || evt.isComposing) return;
    if (isTextField(evt.target) || form.hidden) return;
    evt.preventDefault();
    input.focus();
  });

  // --- Older history ------------------------------------------------------------------------------

  var olderButton = document.getElementById("load-older");
  function loadOlder() {
    if (!olderButton || olderButton.disabled || !olderButton.isConnected) return;
    olderButton.disabled = true;
    var url = config.entriesUrl + "?before=" + olderButton.dataset.before + "&limit=" + config.pageEntries;
    fetchPage(url, "text/html")
      .then(function (response) {
        var hasMore = response.headers.get("X-Has-More") === "true";
        return response.text().then(function (html) {
          var fromBottom = entriesElt.scrollHeight - entriesElt.scrollTop;
          var fragment = parseFragment(html);
          var articles = fragment.querySelectorAll("article[data-seq]");
          articles.forEach(prepare);
          if (articles.length) olderButton.dataset.before = articles[0].dataset.seq;
          var box = olderButton.parentNode;
          entriesElt.insertBefore(fragment, box.nextSibling);
          if (!scroll.stuck) {
            // Keep what you are reading where it is.
            entriesElt.scrollTop = entriesElt.scrollHeight - fromBottom;
            scroll.ownTop = entriesElt.scrollTop;
          }
          if (!hasMore || !articles.length) box.remove();
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
      new IntersectionObserver(
        function (seen) {
          if (seen[0].isIntersecting && conn.opens > 0) loadOlder();
        },
        { root: entriesElt }
      ).observe(olderButton);
    }
  }

  // --- Start --------------------------------------------------------------------------------------------

  entriesElt.querySelectorAll("article[data-seq]").forEach(prepare);
  restore();
  toBottom();
  // Unread entries that the bottom would hide: open at the first of them, under its divider.
  var divider = document.getElementById("unread-divider");
  if (divider) {
    var top = divider.getBoundingClientRect().top - entriesElt.getBoundingClientRect().top;
    if (top < 0) {
      entriesElt.scrollTop += top;
      scroll.ownTop = entriesElt.scrollTop;
      scroll.stuck = atBottom();
    }
  }
  input.focus({ preventScroll: true });
  roomElt.dataset.ready = "true";
})();
