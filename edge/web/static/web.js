"use strict";
// Shared helpers of the consoles. Everything a vehicle or a sender wrote is put on the
// page as text (textContent), never as markup, and the characters that could hide or
// reorder text (controls, bidirectional overrides, invisible ones) are shown as
// escapes, marked, as HQ's terminal shows them.
var lpr = (function () {
  var UNSHOWABLE = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]/gu;

  function escapeChar(ch) {
    var code = ch.codePointAt(0);
    var hex = code.toString(16);
    return code < 0x100 ? "\\x" + ("0" + hex).slice(-2) : "\\u" + ("000" + hex).slice(-4);
  }

  // Text as nodes: plain runs as text nodes, each unshowable character as a marked span.
  function textNodes(value) {
    var text = value === null || value === undefined ? "" : String(value);
    var out = document.createDocumentFragment();
    var last = 0;
    text.replace(UNSHOWABLE, function (ch, offset) {
      if (offset > last) { out.appendChild(document.createTextNode(text.slice(last, offset))); }
      var mark = document.createElement("span");
      mark.className = "ctl";
      mark.textContent = escapeChar(ch);
      out.appendChild(mark);
      last = offset + ch.length;
      return ch;
    });
    if (last < text.length) { out.appendChild(document.createTextNode(text.slice(last))); }
    return out;
  }

  // An element with a class and text content (already escaped by construction).
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.appendChild(textNodes(text)); }
    return node;
  }

  function setText(node, value) {
    while (node.firstChild) { node.removeChild(node.firstChild); }
    node.appendChild(textNodes(value));
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // The CSRF header on reads too: some reads are audited at HQ, and the server
  // refuses an /api request of a session without it (another site cannot add it).
  function getJson(url) {
    return fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRF-Token": csrfToken() }
    }).then(function (r) {
      if (r.status === 401) { window.location.assign("/login"); }
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) { throw new Error(data.error || (url + ": HTTP " + r.status)); }
        return data;
      });
    });
  }

  function postJson(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) { throw new Error(data.error || ("HTTP " + r.status)); }
        return data;
      });
    });
  }

  // An event stream that says whether it is open; on each (re)open the page reloads
  // what it shows (events sent while it was away are not replayed).
  function events(url, handlers, onState) {
    var source = new EventSource(url);
    source.addEventListener("hello", function (e) {
      if (onState) { onState(true); }
      if (handlers.hello) { handlers.hello(JSON.parse(e.data)); }
    });
    Object.keys(handlers).forEach(function (name) {
      if (name === "hello") { return; }
      source.addEventListener(name, function (e) { handlers[name](JSON.parse(e.data)); });
    });
    source.onerror = function () { if (onState) { onState(false); } };
    return source;
  }

  // A list a page reloads whole (each time its event stream connects, or a filter
  // changes) while events keep arriving. Events that come during a reload wait for it:
  // applied before, the reloaded list (read just before they happened) would wipe them;
  // applied after it, the page's handler replaces or skips what is already listed. Only
  // the newest reload's answer is shown.
  function reloadedList() {
    var queued = null;
    var reloads = 0;

    function whenLoaded(handler) {
      return function (data) {
        if (queued) {
          queued.push(function () { handler(data); });
          document.body.dataset.queued = String(queued.length);
        } else {
          handler(data);
        }
      };
    }

    function reload(fetchList, show) {
      var mine = ++reloads;
      queued = queued || [];
      function flush() {
        if (mine !== reloads) { return; }  // a newer reload flushes
        var waiting = queued;
        queued = null;
        delete document.body.dataset.queued;
        waiting.forEach(function (apply) { apply(); });
      }
      return fetchList().then(function (data) {
        if (mine === reloads) { show(data); }
      }).catch(function (e) { window.console.warn(String(e)); }).then(flush);
    }

    return { whenLoaded: whenLoaded, reload: reload };
  }

  return { el: el, setText: setText, textNodes: textNodes, getJson: getJson,
           postJson: postJson, events: events, csrfToken: csrfToken,
           reloadedList: reloadedList };
})();
