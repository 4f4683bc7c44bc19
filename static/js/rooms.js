/*
 * rooms.js: the room list, kept live. A socket on /ws/me/ hears each of your rooms' unread count
 * change (a new entry, your read position moving on another tab); the room's
 * `li[data-room][data-unread]` shows it, and a room with new activity moves to the top of your
 * rooms (they are ordered by latest activity). After a reconnect the counts are read again from
 * the page itself (fetched), since events sent while the socket was down are lost.
 */
(function () {
  "use strict";
  var list = document.getElementById("my-rooms");
  if (!list || !("WebSocket" in window)) return;
  var retries = 0;
  var opened = 0;

  function show(item, unread) {
    item.dataset.unread = String(unread);
    var badge = item.querySelector(".unread");
    var count = badge && badge.querySelector(".unread-count");
    if (!count) return;
    count.textContent = String(unread);
    badge.hidden = !(unread > 0);
  }

  function onFrame(frame) {
    if (!frame || frame.type !== "unread" || typeof frame.room !== "string") return;
    var item = list.querySelector('li[data-room="' + CSS.escape(frame.room) + '"]');
    if (!item) return; // on another page of the list
    show(item, Math.max(0, frame.unread | 0));
    if (frame.activity && list.firstElementChild !== item) list.insertBefore(item, list.firstElementChild);
  }

  function refresh() {
    fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        doc.querySelectorAll("#my-rooms li[data-room]").forEach(function (fresh) {
          var item = list.querySelector('li[data-room="' + CSS.escape(fresh.dataset.room) + '"]');
          if (item) show(item, parseInt(fresh.dataset.unread, 10) || 0);
        });
      })
      .catch(function () {});
  }

  function connect() {
    var socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/me/");
    socket.addEventListener("open", function () {
      retries = 0;
      if (opened++ > 0) refresh();
      list.dataset.live = "true";
    });
    socket.addEventListener("message", function (evt) {
      try {
        onFrame(JSON.parse(evt.data));
      } catch (e) {
        /* not a frame of ours */
      }
    });
    socket.addEventListener("close", function (evt) {
      list.dataset.live = "false";
      if (evt.code === 4401) return; // signed out: the next page load asks to sign in
      var delay = Math.min(30000, 1000 * Math.pow(2, retries++)) * (0.5 + Math.random() / 2);
      setTimeout(connect, delay);
    });
  }
  connect();
})();
