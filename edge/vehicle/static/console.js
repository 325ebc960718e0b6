"use strict";
// The in-car console page. Hits come as JSON (from /api/hits and the event stream)
// and are put on the page as text only (lpr.el / lpr.setText): nothing a hit holds is
// ever parsed as markup.
(function () {
  var hitsList = document.getElementById("hits");
  var template = document.getElementById("hit-template");
  var soundOn = true;
  var audio = null;

  function byId(id) { return document.getElementById(id); }

  function fmtTime(iso) {
    if (!iso) { return "–"; }
    var when = new Date(iso);
    if (isNaN(when.getTime())) { return String(iso); }
    return when.toLocaleString("en-GB", { hour12: false });
  }

  function fmtPosition(position) {
    if (!position || typeof position.lat !== "number" || typeof position.lon !== "number") {
      return "no position";
    }
    var text = position.lat.toFixed(5) + ", " + position.lon.toFixed(5);
    if (typeof position.age_s === "number") { text += " (fix " + position.age_s.toFixed(1) + " s old)"; }
    return text;
  }

  function plateRuns(cell, runs, approximate) {
    while (cell.firstChild) { cell.removeChild(cell.firstChild); }
    (runs || []).forEach(function (run) {
      cell.appendChild(lpr.el("span", run.same ? "" : "differs", run.text));
    });
    if (approximate) {
      var sign = lpr.el("span", "approx-sign", "≈");
      sign.title = "approximate match";
      cell.appendChild(sign);
    }
  }

  function showDecision(card, decision) {
    var state = card.querySelector(".decision-state");
    state.className = "decision-state";
    if (!decision) { lpr.setText(state, ""); return; }
    var text;
    if (decision.decision === "accept") {
      state.classList.add("accepted");
      text = "Accepted";
    } else {
      state.classList.add("rejected");
      text = "Rejected: " + String(decision.reason || "").replace(/-/g, " ");
    }
    text += " at " + fmtTime(decision.decided_at);
    if (decision.officer) { text += " by " + decision.officer; }
    if (decision.note) { text += " (" + decision.note + ")"; }
    lpr.setText(state, text);
    card.dataset.decision = decision.decision;
  }

  function fill(card, hit) {
    card.dataset.eventId = hit.event_id;
    var p1 = hit.priority === 1;
    card.classList.toggle("p1", p1);
    lpr.setText(card.querySelector(".priority"), "P" + (hit.priority === null || hit.priority === undefined ? "?" : hit.priority));
    lpr.setText(card.querySelector(".list"), hit.list || "(no list)");
    var match = card.querySelector(".match");
    match.classList.toggle("approx", !!hit.approximate);
    lpr.setText(match, hit.approximate ? "≈ approximate match (" + hit.match + ")" : "exact match");
    lpr.setText(card.querySelector(".when"), fmtTime(hit.observed_at));
    var readCell = card.querySelector(".read");
    plateRuns(readCell, hit.read_runs, hit.approximate);
    if (hit.matched_text !== hit.plate) {
      // Another of the pass's OCR candidates matched: the voted read is shown too.
      readCell.appendChild(lpr.el("span", "voted", " (voted read " + hit.plate + ")"));
    }
    plateRuns(card.querySelector(".entry"), hit.entry_runs, false);
    lpr.setText(card.querySelector(".reason"), hit.reason);
    lpr.setText(card.querySelector(".priority-text"), hit.priority);
    lpr.setText(card.querySelector(".list-text"), hit.list);
    lpr.setText(card.querySelector(".entry-id"), hit.entry_id);
    lpr.setText(card.querySelector(".camera"), hit.camera);
    var time = card.querySelector(".time");
    lpr.setText(time, fmtTime(hit.observed_at));
    time.title = String(hit.observed_at || "");
    lpr.setText(card.querySelector(".position"), fmtPosition(hit.position));
    var plate = card.querySelector(".plate-image");
    if (hit.plate_image) { plate.src = hit.plate_image; plate.hidden = false; }
    var context = card.querySelector(".context-image");
    if (hit.context_image) { context.src = hit.context_image; context.hidden = false; }
    markWithdrawn(card, !!hit.withdrawn);
    showDecision(card, hit.decision);
  }

  function markWithdrawn(card, withdrawn) {
    card.classList.toggle("withdrawn", withdrawn);
    card.querySelector(".withdrawn-flag").hidden = !withdrawn;
  }

  function cardOf(eventId) {
    var cards = hitsList.children;
    for (var i = 0; i < cards.length; i++) {
      if (cards[i].dataset.eventId === eventId) { return cards[i]; }
    }
    return null;
  }

  function decide(card, decision) {
    var reason = card.querySelector(".reject-reason").value;
    var note = card.querySelector(".note").value;
    var state = card.querySelector(".decision-state");
    if (decision === "reject" && !reason) {
      state.className = "decision-state error";
      lpr.setText(state, "Choose a reason to reject.");
      return;
    }
    var buttons = card.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    lpr.postJson("/api/hits/" + encodeURIComponent(card.dataset.eventId) + "/decision",
                 { decision: decision, reason: decision === "reject" ? reason : null, note: note })
      .then(function (answer) { showDecision(card, answer.decision); })
      .catch(function (error) {
        state.className = "decision-state error";
        lpr.setText(state, "Not saved: " + error.message);
      })
      .then(function () { buttons.forEach(function (b) { b.disabled = false; }); });
  }

  function makeCard(hit) {
    var card = template.content.firstElementChild.cloneNode(true);
    fill(card, hit);
    card.querySelector(".accept").addEventListener("click", function () { decide(card, "accept"); });
    card.querySelector(".reject").addEventListener("click", function () { decide(card, "reject"); });
    return card;
  }

  function updateCount() {
    var n = hitsList.children.length;
    byId("no-hits").hidden = n > 0;
    lpr.setText(byId("hit-count"), n ? "(" + n + ")" : "");
  }

  function showAll(hits) {
    var fresh = document.createDocumentFragment();
    hits.forEach(function (hit) {
      var card = makeCard(hit);
      card.dataset.shownAt = String(Date.now());
      fresh.appendChild(card);
    });
    while (hitsList.firstChild) { hitsList.removeChild(hitsList.firstChild); }
    hitsList.appendChild(fresh);
    updateCount();
  }

  function newHit(hit) {
    if (cardOf(hit.event_id)) { return; }
    var card = makeCard(hit);
    card.dataset.shownAt = String(Date.now());
    card.classList.add("fresh");
    hitsList.insertBefore(card, hitsList.firstChild);
    updateCount();
    if (hit.priority === 1) { alarm(); }
  }

  // A priority-1 hit: three rising tones, made here (no sound file to ship or fetch).
  function alarm() {
    if (!soundOn) { return; }
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      if (audio.state === "suspended") { audio.resume(); }
      var start = audio.currentTime;
      [880, 1175, 1568].forEach(function (freq, i) {
        var osc = audio.createOscillator();
        var gain = audio.createGain();
        osc.type = "square";
        osc.frequency.value = freq;
        gain.gain.setValueAtTime(0.25, start + i * 0.22);
        gain.gain.exponentialRampToValueAtTime(0.001, start + i * 0.22 + 0.2);
        osc.connect(gain).connect(audio.destination);
        osc.start(start + i * 0.22);
        osc.stop(start + i * 0.22 + 0.21);
      });
      document.body.dataset.alarms = String(Number(document.body.dataset.alarms || 0) + 1);
    } catch (e) {
      // No audio device: the flash still shows.
    }
  }

  // Pushed events wait while the list reloads (lpr.reloadedList); newHit then skips
  // a hit already listed.
  var hitList = lpr.reloadedList();
  var whenLoaded = hitList.whenLoaded;

  function reload() {
    return hitList.reload(function () { return lpr.getJson("/api/hits"); },
      function (data) { showAll(data.hits); });
  }

  function listItem(list, text, alarmed) {
    list.appendChild(lpr.el("li", alarmed ? "alarm" : "", text));
  }

  function showStatus(data) {
    var status = data.status || {};
    var cams = byId("status-cameras");
    while (cams.firstChild) { cams.removeChild(cams.firstChild); }
    var cameras = status.cameras || {};
    var names = Object.keys(cameras);
    if (!names.length) { listItem(cams, "none (recording)", false); }
    names.forEach(function (name) {
      var cam = cameras[name] || {};
      var fps = typeof cam.fps === "number" ? cam.fps.toFixed(1) : "?";
      listItem(cams, name + ": " + cam.state + ", " + fps + " fps", cam.state !== "connected");
    });
    var gps = status.gps;
    lpr.setText(byId("status-gps"), gps ? (gps.state + (gps.age_s !== undefined && gps.age_s !== null ? " (" + gps.age_s + " s)" : "")) : "off");
    var outbox = status.outbox || {};
    var box = byId("status-outbox");
    lpr.setText(box, (outbox.pending === undefined ? "?" : outbox.pending) + " waiting for HQ" + (outbox.alarm ? " – ALARM: " + outbox.alarm : ""));
    box.className = outbox.alarm ? "alarm" : "";
    var broker = status.broker;
    lpr.setText(byId("status-broker"), broker ? (broker.connected ? "connected" : "NOT CONNECTED") : "none configured");
    var lists = byId("status-watchlists");
    while (lists.firstChild) { lists.removeChild(lists.firstChild); }
    var wl = status.watchlist || {};
    ["file", "fleet", "vehicle"].forEach(function (kind) {
      var info = wl[kind];
      if (!info) { return; }
      listItem(lists, kind + ": version " + info.version + ", " + info.entries + " entries" + (info.error ? " – ERROR " + info.error : ""), !!info.error);
    });
    if (!lists.firstChild) { listItem(lists, "none in force", true); }
    lpr.setText(byId("status-lines"), (data.lines || []).join("\n"));
  }

  function pollStatus() {
    lpr.getJson("/api/status").then(showStatus).catch(function () {});
  }

  byId("sound-toggle").addEventListener("click", function () {
    soundOn = !soundOn;
    lpr.setText(byId("sound-toggle"), "Sound: " + (soundOn ? "on" : "off"));
  });
  byId("logout-form").addEventListener("submit", function (e) {
    e.preventDefault();
    lpr.postJson("/logout", {}).catch(function () {}).then(function () { window.location.assign("/login"); });
  });

  lpr.events("/events", {
    hello: reload,
    hit: whenLoaded(newHit),
    withdrawn: whenLoaded(function (data) {
      var card = cardOf(data.event_id);
      if (card) { markWithdrawn(card, true); }
    }),
    decision: whenLoaded(function (decision) {
      var card = cardOf(decision.hit_event_id);
      if (card) { showDecision(card, decision); }
    })
  }, function (open) {
    var state = byId("stream-state");
    state.className = open ? "online" : "offline";
    lpr.setText(state, open ? "live" : "reconnecting…");
  });
  pollStatus();
  setInterval(pollStatus, 3000);
})();
