"use strict";
// HQ's console. Everything from a vehicle is put on the page with lpr.el / lpr.setText
// (text nodes, control characters shown marked), never as markup.
(function () {
  var root = document.getElementById("hq");
  var tiles = root.getAttribute("data-map-tiles") || "";
  var rows = document.getElementById("hit-rows");
  var filterList = document.getElementById("filter-list");
  var filterPriority = document.getElementById("filter-priority");
  var shown = {};  // "event_id vehicle_id" -> {hit, tr}

  function key(eventId, vehicleId) { return eventId + " " + vehicleId; }

  function td(text, className) { return lpr.el("td", className || "", text); }

  // The verdict in force is the decision no other supersedes: the car's own order of
  // corrections, which a step of the car's clock (decided_at) cannot reorder. Two
  // unsuperseded (a lost message): the later decided_at. The rest stay listed, struck,
  // by decided_at, before it.
  function inForceLast(decisions) {
    var superseded = {};
    decisions.forEach(function (d) { if (d.supersedes) { superseded[d.supersedes] = true; } });
    var list = decisions.slice().sort(function (a, b) {
      return a.decided_at < b.decided_at ? -1 : a.decided_at > b.decided_at ? 1 : 0;
    });
    var current = list.filter(function (d) { return !superseded[d.event_id]; });
    var inForce = current.length ? current[current.length - 1] : list[list.length - 1];
    return list.filter(function (d) { return d !== inForce; }).concat(inForce ? [inForce] : []);
  }

  function decisionCell(hit) {
    var cell = lpr.el("td", "decision");
    var list = inForceLast(hit.decisions);
    if (!list.length) { cell.appendChild(lpr.el("span", "pending", "awaiting officer")); }
    list.forEach(function (d, i) {
      var line = lpr.el("div", "verdict " + d.decision + (i < list.length - 1 ? " superseded" : ""));
      line.setAttribute("data-decision", d.decision);
      line.appendChild(lpr.el("strong", "", d.decision === "accept" ? "ACCEPTED" : "REJECTED"));
      if (d.reason) { line.appendChild(lpr.el("span", "reason", " " + d.reason)); }
      line.appendChild(lpr.el("span", "officer", " by " + (d.officer || "officer") + " at " + d.decided_at));
      if (d.note) { line.appendChild(lpr.el("span", "note", " “" + d.note + "”")); }
      if (d.conflict) { line.appendChild(lpr.el("span", "flag", " id conflict")); }
      cell.appendChild(line);
    });
    return cell;
  }

  function hitRow(hit) {
    var tr = document.createElement("tr");
    tr.className = "hit p" + hit.priority + (hit.covert ? " covert" : "") +
      (hit.withdrawn ? " withdrawn" : "") + (hit.conflict ? " conflict" : "");
    tr.setAttribute("data-event-id", hit.event_id);
    tr.setAttribute("data-vehicle", hit.vehicle_id);
    tr.appendChild(td(hit.received_at || hit.observed_at, "time"));
    var plate = lpr.el("td", "plate");
    var open = lpr.el("button", "plate-button", hit.plate);
    open.type = "button";
    open.addEventListener("click", function () { showHit(hit.event_id); });
    plate.appendChild(open);
    if (hit.withdrawn) { plate.appendChild(lpr.el("span", "flag", " withdrawn")); }
    if (hit.conflict) { plate.appendChild(lpr.el("span", "flag", " conflict")); }
    if (hit.covert) { plate.appendChild(lpr.el("span", "flag", " covert")); }
    tr.appendChild(plate);
    var entry = (hit.match === "exact" ? "" : "≈ ") + (hit.entry_plate || "") +
      (hit.reason ? " (" + hit.reason + ")" : "");
    tr.appendChild(td(entry, "entry"));
    tr.appendChild(td(hit.vehicle_id));
    tr.appendChild(td(hit.camera));
    tr.appendChild(td(hit.list));
    tr.appendChild(td(hit.priority, "priority"));
    tr.appendChild(td(hit.match));
    tr.appendChild(decisionCell(hit));
    return tr;
  }

  function wanted(hit) {
    var l = filterList.value, p = filterPriority.value;
    return (!l || hit.list === l) && (!p || String(hit.priority) === p);
  }

  function countShown() {
    lpr.setText(document.getElementById("hit-count"), rows.children.length + " shown");
  }

  function addHit(hit, atTop) {
    var k = key(hit.event_id, hit.vehicle_id);
    var tr = hitRow(hit);
    if (shown[k] && !hit.conflict) {
      rows.replaceChild(tr, shown[k].tr);
    } else if (atTop) {
      rows.insertBefore(tr, rows.firstChild);
    } else {
      rows.appendChild(tr);
    }
    if (!hit.conflict || !shown[k]) { shown[k] = { hit: hit, tr: tr }; }
  }

  function setLists(lists) {
    var current = filterList.value;
    while (filterList.children.length > 1) { filterList.removeChild(filterList.lastChild); }
    lists.forEach(function (name) {
      var o = lpr.el("option", "", name);
      o.value = name;
      filterList.appendChild(o);
    });
    filterList.value = current;
  }

  // Pushed events wait while the list reloads (lpr.reloadedList); a hit already
  // listed then replaces its row instead of doubling it.
  var hitList = lpr.reloadedList();
  var whenLoaded = hitList.whenLoaded;

  function loadHits() {
    var q = new URLSearchParams();
    if (filterList.value) { q.set("list", filterList.value); }
    if (filterPriority.value) { q.set("priority", filterPriority.value); }
    return hitList.reload(function () { return lpr.getJson("/api/hits?" + q.toString()); },
      function (data) {
        while (rows.firstChild) { rows.removeChild(rows.firstChild); }
        shown = {};
        data.hits.forEach(function (hit) { addHit(hit, false); });
        setLists(data.lists);
        countShown();
      });
  }

  function onHit(hit) {
    if (!wanted(hit)) { return; }
    addHit(hit, true);
    countShown();
  }

  function onDecision(d) {
    var entry = shown[key(d.hit_event_id, d.vehicle_id)];
    if (!entry) { return; }
    entry.hit.decisions.push(d);
    var tr = hitRow(entry.hit);
    rows.replaceChild(tr, entry.tr);
    entry.tr = tr;
  }

  function onWithdrawal(w) {
    var entry = shown[key(w.hit_event_id, w.vehicle_id)];
    if (!entry) { return; }
    entry.hit.withdrawn = true;
    var tr = hitRow(entry.hit);
    rows.replaceChild(tr, entry.tr);
    entry.tr = tr;
  }

  // --- vehicles ---------------------------------------------------------------------

  function cameras(v) {
    return Object.keys(v.cameras || {}).map(function (name) {
      var c = v.cameras[name] || {};
      return name + " " + (c.state || "?") + (typeof c.fps === "number" ? " " + c.fps.toFixed(1) + " fps" : "");
    }).join(", ") || "-";
  }

  function outbox(v) {
    var o = v.outbox;
    if (!o) { return "-"; }
    return (o.pending === undefined ? "?" : o.pending) + " pending" + (o.alarm ? " — " + o.alarm : "");
  }

  function watchlists(v) {
    var w = v.watchlist;
    if (!w) { return "-"; }
    return ["file", "fleet", "vehicle"].filter(function (k) { return w[k]; }).map(function (k) {
      var version = w[k].version !== undefined ? w[k].version : (w[k].sha256 || "").slice(0, 8);
      return k + " " + version;
    }).join(", ") || "-";
  }

  function position(v) {
    var g = v.gps;
    if (!g || typeof g.lat !== "number" || typeof g.lon !== "number") { return g && g.state ? g.state : "-"; }
    return g.lat.toFixed(5) + ", " + g.lon.toFixed(5) + (g.last_fix ? " at " + g.last_fix : "");
  }

  function loadVehicles() {
    return lpr.getJson("/api/statuses").then(function (data) {
      var body = document.getElementById("vehicle-rows");
      while (body.firstChild) { body.removeChild(body.firstChild); }
      data.vehicles.forEach(function (v) {
        var tr = document.createElement("tr");
        tr.setAttribute("data-vehicle", v.vehicle_id);
        tr.appendChild(td(v.vehicle_id));
        tr.appendChild(td(v.state, v.state === "online" ? "online" : "offline"));
        tr.appendChild(td(cameras(v)));
        tr.appendChild(td(outbox(v)));
        tr.appendChild(td(watchlists(v)));
        tr.appendChild(td(position(v)));
        tr.appendChild(td(v.at || v.received_at));
        body.appendChild(tr);
      });
      hqMap.draw(document.getElementById("map"), data.vehicles, tiles);
    });
  }

  // --- a hit's record (each view audited at HQ) ----------------------------------------

  function field(dl, name, value) {
    dl.appendChild(lpr.el("dt", "", name));
    dl.appendChild(lpr.el("dd", "", value === null || value === undefined ? "-" : value));
  }

  function showHit(eventId) {
    lpr.getJson("/api/hits/" + encodeURIComponent(eventId)).then(function (data) {
      var panel = document.getElementById("detail");
      var body = document.getElementById("detail-body");
      while (body.firstChild) { body.removeChild(body.firstChild); }
      data.rows.forEach(function (r) {
        var box = lpr.el("div", "record");
        box.setAttribute("data-event-id", r.event_id);
        ["plate_image", "context_image"].forEach(function (k) {
          if (r.images[k]) {
            var img = document.createElement("img");
            img.className = k;
            img.alt = k.replace("_", " ");
            img.src = "data:image/jpeg;base64," + r.images[k];
            box.appendChild(img);
          }
        });
        var dl = document.createElement("dl");
        field(dl, "Plate", r.plate);
        field(dl, "Watchlist entry", (r.entry_plate || "") + " (" + (r.match || "") + ", entry " + (r.entry_id || "-") + ")");
        field(dl, "Reason", r.reason);
        field(dl, "List / priority", r.list + " / P" + r.priority);
        field(dl, "Vehicle / camera", r.vehicle_id + " / " + r.camera);
        field(dl, "Observed / received", r.observed_at + " / " + r.received_at);
        field(dl, "Position", r.position ? r.position.lat + ", " + r.position.lon : null);
        field(dl, "Flags", [r.covert && "covert", r.conflict && "id conflict", r.withdrawn && "withdrawn"].filter(Boolean).join(", ") || "-");
        field(dl, "Event id", r.event_id);
        box.appendChild(dl);
        body.appendChild(box);
      });
      var decisions = lpr.el("div", "record");
      decisions.appendChild(lpr.el("h3", "", "Decisions"));
      var pseudo = { decisions: data.decisions };
      var holder = document.createElement("table");
      var tr = document.createElement("tr");
      tr.appendChild(decisionCell(pseudo));
      holder.appendChild(tr);
      decisions.appendChild(holder);
      data.withdrawals.forEach(function (w) {
        decisions.appendChild(lpr.el("p", "flag", "Withdrawn by " + w.vehicle_id + " at " + w.at + ": " + w.reason));
      });
      body.appendChild(decisions);
      panel.hidden = false;
      panel.scrollIntoView();
    }).catch(function (e) { window.console.warn(String(e)); });
  }

  // --- search (each audited at HQ) ----------------------------------------------------

  function search(event) {
    event.preventDefault();
    var form = document.getElementById("search-form");
    var q = new URLSearchParams();
    Array.prototype.forEach.call(form.elements, function (input) {
      if (input.name && input.value) { q.set(input.name, input.value); }
    });
    var summary = document.getElementById("search-summary");
    var table = document.getElementById("search-results");
    var body = document.getElementById("search-rows");
    lpr.getJson("/api/search?" + q.toString())
      .then(function (data) {
        while (body.firstChild) { body.removeChild(body.firstChild); }
        summary.className = "";
        lpr.setText(summary, data.results.length + " result(s) for " + data.query.plate + " (search audited)");
        data.results.forEach(function (r) {
          var tr = document.createElement("tr");
          tr.setAttribute("data-event-id", r.event_id);
          tr.appendChild(td(r.distance));
          var plate = lpr.el("td", "plate");
          var open = lpr.el("button", "plate-button", r.plate);
          open.type = "button";
          open.addEventListener("click", function () { showHit(r.event_id); });
          plate.appendChild(open);
          tr.appendChild(plate);
          tr.appendChild(td(r.observed_at));
          tr.appendChild(td(r.vehicle_id));
          tr.appendChild(td(r.camera));
          tr.appendChild(td(r.list));
          tr.appendChild(td(r.entry_plate));
          tr.appendChild(td(r.priority));
          tr.appendChild(td([r.conflict && "conflict", r.withdrawn && "withdrawn"].filter(Boolean).join(", ") || "-"));
          body.appendChild(tr);
        });
        table.hidden = false;
      })
      .catch(function (error) {
        while (body.firstChild) { body.removeChild(body.firstChild); }
        summary.className = "error";
        lpr.setText(summary, error.message || "search refused");
        table.hidden = true;
      });
  }

  function setStream(open) {
    var state = document.getElementById("stream-state");
    state.className = open ? "online" : "offline";
    lpr.setText(state, open ? "live" : "reconnecting");
  }

  filterList.addEventListener("change", loadHits);
  filterPriority.addEventListener("change", loadHits);
  document.getElementById("search-form").addEventListener("submit", search);
  document.getElementById("detail-close").addEventListener("click", function () {
    document.getElementById("detail").hidden = true;
  });
  document.getElementById("logout").addEventListener("click", function () {
    fetch("/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": lpr.csrfToken() } })
      .then(function () { window.location.assign("/login"); });
  });
  // Each (re)open of the stream reloads the list: what was pushed while away is not replayed.
  lpr.events("/events", {
    hello: function () { loadHits(); loadVehicles(); },
    hit: whenLoaded(onHit),
    decision: whenLoaded(onDecision),
    withdrawal: whenLoaded(onWithdrawal),
    status: loadVehicles
  }, setStream);
  // Statuses change without a state change (cameras, outbox, position): read them now and then.
  window.setInterval(loadVehicles, 10000);
})();
