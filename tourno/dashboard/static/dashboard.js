// Tourno admin: relative times kept current, and the overview's live refresh
// (fetch polling of /admin/overview.json). No inline script anywhere: the
// Content-Security-Policy forbids it.
"use strict";

(function () {

  function duration(seconds) {
    var s = Math.floor(Math.abs(seconds));
    if (s < 1) return "0 s";
    var units = [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]];
    var parts = [];
    for (var i = 0; i < units.length && parts.length < 2; i++) {
      var size = units[i][0], unit = units[i][1];
      if (s >= size) {
        parts.push(Math.floor(s / size) + " " + unit);
        s = s % size;
        if (unit === "min" || unit === "s") break;
      }
    }
    return parts.join(" ");
  }

  function relative(iso) {
    var delta = (Date.now() - Date.parse(iso)) / 1000;
    if (isNaN(delta)) return "";
    if (Math.abs(delta) < 1) return "just now";
    return delta > 0 ? duration(delta) + " ago" : "in " + duration(delta);
  }

  function refreshRelative(root) {
    var nodes = (root || document).querySelectorAll(".rel[data-since]");
    for (var i = 0; i < nodes.length; i++) {
      nodes[i].textContent = relative(nodes[i].getAttribute("data-since"));
    }
  }

  function utc(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return "";
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function cell(tr, text) {
    var td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function setText(id, text) {
    var node = document.getElementById(id);
    if (node) node.textContent = text;
  }

  // The charts' geometry comes drawn by the server (tourno/dashboard/charts.py):
  // a refresh only moves the lines and replaces the texts.
  function renderCharts(charts) {
    (charts || []).forEach(function (c) {
      function attr(selector, name, value) {
        var node = document.querySelector(selector);
        if (node) node.setAttribute(name, value);
      }
      function text(selector, value) {
        var nodes = document.querySelectorAll(selector);
        for (var i = 0; i < nodes.length; i++) nodes[i].textContent = value;
      }
      attr('[data-line="' + c.id + '-processed"]', "points", c.rate.processed);
      attr('[data-line="' + c.id + '-failed"]', "points", c.rate.failed);
      attr('[data-line="' + c.id + '-mean"]', "points", c.wait.mean);
      text('[data-top="' + c.id + '-rate"]', c.rate.top + "/min");
      text('[data-top="' + c.id + '-wait"]', c.wait.top);
      text('[data-from="' + c.id + '"]', utc(c.from));
      text('[data-summary="' + c.id + '"]', c.summary);
      Object.keys(c.totals).forEach(function (name) {
        text("#totals-" + c.id + ' [data-total="' + name + '"]', String(c.totals[name]));
      });
    });
  }

  function render(data) {
    var body = document.querySelector("#queues tbody");
    if (body) {
      while (body.firstChild) body.removeChild(body.firstChild);
      if (!data.queues.length) {
        var empty = document.createElement("tr");
        empty.className = "empty";
        cell(empty, "No jobs waiting on any queue.").colSpan = 6;
        body.appendChild(empty);
      }
      data.queues.forEach(function (q) {
        var tr = document.createElement("tr");
        var name = document.createElement("td");
        var link = document.createElement("a");
        link.href = "/admin/jobs?queue=" + encodeURIComponent(q.queue);
        link.textContent = q.queue;
        name.appendChild(link);
        tr.appendChild(name);
        cell(tr, q.ready_text);
        cell(tr, q.delayed_text);
        cell(tr, q.reserved_text);
        cell(tr, q.oldest_ready_age);
        var paused = cell(tr, "");
        if (q.paused_at) {
          var tag = document.createElement("span");
          tag.className = "tag failed";
          tag.textContent = "paused";
          paused.appendChild(tag);
        }
        body.appendChild(tr);
      });
    }
    setText("workers", String(data.workers));
    setText("busy-workers", String(data.busy_workers));
    setText("failed", data.failed_text);
    var card = document.getElementById("failed-card");
    if (card) card.classList.toggle("bad", data.failed > 0);
    setText("waiting-for-redis", String(data.waiting_for_redis));
    var last = document.getElementById("last-dispatch");
    if (last) {
      while (last.firstChild) last.removeChild(last.firstChild);
      if (data.last_dispatch) {
        last.appendChild(document.createTextNode(data.last_dispatch.task + " " + utc(data.last_dispatch.slot) + " "));
        var rel = document.createElement("span");
        rel.className = "rel";
        rel.setAttribute("data-since", data.last_dispatch.slot);
        last.appendChild(rel);
      } else {
        last.textContent = data.schedule_problem || "never";
      }
    }
    Object.keys(data.mail).forEach(function (status) {
      var td = document.querySelector('#mail td[data-status="' + status + '"]');
      if (td) td.textContent = String(data.mail[status]);
    });
    var at = document.getElementById("generated-at");
    if (at) {
      at.setAttribute("datetime", data.generated_at);
      at.textContent = utc(data.generated_at);
    }
    renderCharts(data.charts);
    refreshRelative(document);
  }

  function startPolling(live) {
    var state = document.getElementById("live-state");
    var source = live.getAttribute("data-source");
    var lastOk = Date.now();
    var every = parseInt(live.getAttribute("data-poll-ms"), 10) || 5000;

    function mark(ok, text) {
      live.classList.toggle("stale", !ok);
      state.textContent = text;
    }

    var inFlight = false;

    function poll() {
      // One request at a time, and a server that accepts but never answers
      // counts as unreachable after two intervals.
      if (inFlight) return;
      inFlight = true;
      var controller = new AbortController();
      var timer = setTimeout(function () { controller.abort(); }, Math.max(2 * every, 4000));
      fetch(source, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        cache: "no-store",
        signal: controller.signal
      })
        .then(function (response) {
          if (response.status === 401) {
            mark(false, "stale: logged out; reload the page to log in again");
            return null;
          }
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (data) {
          if (!data) return;
          lastOk = Date.now();
          render(data);
          mark(true, "live");
        })
        .catch(function () {
          mark(false, "stale: server unreachable (last update " + duration((Date.now() - lastOk) / 1000) + " ago)");
        })
        .then(function () {
          clearTimeout(timer);
          inFlight = false;
        });
    }

    setInterval(poll, every);
  }

  document.addEventListener("DOMContentLoaded", function () {
    refreshRelative(document);
    setInterval(function () { refreshRelative(document); }, 10000);
    var live = document.getElementById("live");
    if (live) startPolling(live);
  });
})();
