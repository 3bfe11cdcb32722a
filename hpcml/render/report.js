// The report's timeline (one canvas) and task table (a page of rows at a time), drawn from
// the JSON in script#hpcml-data (hpcml/render/report.py `compact`). No network, no library.
// The first view shows every task (rows may be thinner than a pixel: each bar is drawn at
// least one pixel high); only rows in view are drawn, so 10,000 tasks pan and zoom freely.
(function () {
  "use strict";
  var t0 = performance.now();
  var D = JSON.parse(document.getElementById("hpcml-data").textContent);
  var T = D.tasks; // [step, index, state, exit, job, node, devices, wait, elapsed, gpuh, rss, reqmem, attempts, order, segs, point]
  var SEGC = D.segkinds.map(function (k) { return D.colours[k] || "#999"; });
  function label(t) { return D.steps[t[0]] + "/" + t[1]; }
  function dur(s) {
    if (s === null || s === undefined) return "–";
    s = Math.round(s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + ("0" + (s % 60)).slice(-2) + "s";
    return Math.floor(s / 3600) + "h " + ("0" + Math.floor((s % 3600) / 60)).slice(-2) + "m";
  }
  function size(n) {
    if (n === null || n === undefined) return "–";
    var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < 4) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + u[i];
  }
  function clock(s) { return new Date((D.t0 + s) * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z"; }

  // ---- timeline ------------------------------------------------------------------------
  var canvas = document.getElementById("tl-canvas"), tip = document.getElementById("tl-tip");
  var ctx = canvas.getContext("2d");
  var LEFT = 150, AXIS = 22, ratio = window.devicePixelRatio || 1;
  var fitH = Math.min(16, 560 / Math.max(1, T.length)), rowH = fitH;
  var viewH = Math.ceil(Math.min(T.length * rowH, 560)) + AXIS;
  var span = Math.max(1, D.span), x0 = 0, x1 = span * 1.02, top = 0; // visible seconds, first row
  var width = 0;

  function resize() {
    width = canvas.parentNode.clientWidth || 900;
    canvas.width = width * ratio; canvas.height = viewH * ratio;
    canvas.style.height = viewH + "px";
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  }
  function px(s) { return LEFT + (s - x0) / (x1 - x0) * (width - LEFT - 8); }
  function secAt(x) { return x0 + (x - LEFT) / (width - LEFT - 8) * (x1 - x0); }
  function tick(range) {
    var steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400];
    for (var i = 0; i < steps.length; i++) if (range / steps[i] <= 10) return steps[i];
    return 86400 * Math.ceil(range / 864000);
  }
  function draw(index) {
    ctx.clearRect(0, 0, width, viewH);
    ctx.font = "11px system-ui, sans-serif";
    var step = tick(x1 - x0), lines = [];
    ctx.fillStyle = "#607d8b"; ctx.strokeStyle = "#eceff1";
    for (var s = Math.ceil(x0 / step) * step; s <= x1; s += step) {
      var x = px(s);
      ctx.beginPath(); ctx.moveTo(x, AXIS - 4); ctx.lineTo(x, viewH); ctx.stroke();
      ctx.fillText(dur(s), x + 2, 12);
    }
    var first = Math.max(0, Math.floor(top)), last = Math.min(T.length, Math.ceil(top + (viewH - AXIS) / rowH));
    var prevStep = -1, lastLabel = -99, barH = rowH > 4 ? rowH - 2 : Math.max(1, rowH), pad = rowH > 4 ? 1 : 0;
    ctx.save(); ctx.beginPath(); ctx.rect(0, AXIS, width, viewH - AXIS); ctx.clip();
    for (var r = first; r < last; r++) {
      var t = T[r], y = AXIS + (r - top) * rowH, segs = t[14];
      if (t[0] !== prevStep && r > first) {
        ctx.strokeStyle = "#b0bec5"; ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(width, y); ctx.stroke();
      }
      ctx.fillStyle = "#37474f";
      if (rowH >= 10) ctx.fillText(label(t), 4, y + rowH - 3);
      else if (t[0] !== prevStep && y - lastLabel > 12) { ctx.fillText(D.steps[t[0]], 4, Math.max(y, AXIS) + 10); lastLabel = y; }
      prevStep = t[0];
      for (var k = 0; k < segs.length; k += 3) {
        var a = px(segs[k + 1]), b = px(segs[k + 2]);
        if (b < LEFT || a > width) continue;
        a = Math.max(a, LEFT);
        ctx.fillStyle = SEGC[segs[k]];
        ctx.fillRect(a, y + pad, Math.max(1.5, b - a), barH);
        if (index) lines.push(label(t) + " " + D.segkinds[segs[k]] + " " + Math.round(a) + " " + Math.round(b));
      }
    }
    ctx.restore();
    canvas.dataset.rowsDrawn = String(last - first);
    if (index) document.getElementById("timeline-index").textContent = lines.join("\n");
  }
  function scrollRows(by) {
    top = Math.max(0, Math.min(Math.max(0, T.length - (viewH - AXIS) / rowH), top + by)); draw(false);
  }
  function zoomRows(f, at) {  // taller or thinner rows, keeping the row under the cursor in place
    var y = (at === undefined ? viewH / 2 : at) - AXIS, r = top + y / rowH;
    rowH = Math.max(fitH, Math.min(24, rowH * f)); top = r - y / rowH; scrollRows(0);
  }
  function zoom(f, at) {
    var c = at === undefined ? (x0 + x1) / 2 : secAt(at);
    var nx0 = c - (c - x0) * f, nx1 = c + (x1 - c) * f;
    if (nx1 - nx0 < 1) return;
    x0 = nx0; x1 = nx1; draw(false);
  }
  canvas.addEventListener("wheel", function (e) {
    e.preventDefault();
    if (e.ctrlKey || e.metaKey) { zoom(e.deltaY > 0 ? 1.25 : 0.8, e.offsetX); return; }
    if (e.shiftKey || e.altKey) { zoomRows(e.deltaY > 0 ? 0.8 : 1.25, e.offsetY); return; }
    scrollRows((e.deltaY > 0 ? 1 : -1) * 40 / rowH);
  }, { passive: false });
  var dragging = null;
  canvas.addEventListener("mousedown", function (e) { dragging = { x: e.offsetX, x0: x0, x1: x1 }; });
  window.addEventListener("mouseup", function () { dragging = null; });
  canvas.addEventListener("mousemove", function (e) {
    if (dragging) {
      var ds = (e.offsetX - dragging.x) / (width - LEFT - 8) * (dragging.x1 - dragging.x0);
      x0 = dragging.x0 - ds; x1 = dragging.x1 - ds; draw(false); tip.hidden = true; return;
    }
    var r = Math.floor(top + (e.offsetY - AXIS) / rowH), t = T[r], s = secAt(e.offsetX);
    if (!t || e.offsetY < AXIS) { tip.hidden = true; return; }
    var segs = t[14], text = null;
    for (var k = 0; k < segs.length; k += 3) {
      if (s >= segs[k + 1] - (x1 - x0) / 400 && s <= segs[k + 2] + (x1 - x0) / 400) {
        text = label(t) + "  " + (t[15] || "") + "\n" + D.segkinds[segs[k]] + ": " + clock(segs[k + 1]) + " → " +
          clock(segs[k + 2]) + " (" + dur(segs[k + 2] - segs[k + 1]) + ")\nstate " + D.states[t[2]] +
          (t[4] ? "  job " + t[4] : "") + (t[5] ? "  on " + t[5] : "") + (t[6] ? "  devices " + t[6] : "");
      }
    }
    if (text === null) { tip.hidden = true; return; }
    tip.textContent = text; tip.hidden = false;
    tip.style.left = Math.min(e.offsetX + 12, width - 320) + "px"; tip.style.top = (e.offsetY + 14) + "px";
  });
  canvas.addEventListener("mouseleave", function () { tip.hidden = true; });
  document.getElementById("tl-in").onclick = function () { zoom(0.5); };
  document.getElementById("tl-out").onclick = function () { zoom(2); };
  document.getElementById("tl-rows-in").onclick = function () { zoomRows(2); };
  document.getElementById("tl-rows-out").onclick = function () { zoomRows(0.5); };
  document.getElementById("tl-reset").onclick = function () { x0 = 0; x1 = span * 1.02; top = 0; rowH = fitH; draw(false); };
  window.addEventListener("resize", function () { resize(); draw(false); });

  // ---- task table: failures first, a page at a time --------------------------------------
  var PAGE = 500, shown = 0, rows = T.slice().sort(function (a, b) { return a[13] - b[13]; }), filtered = rows;
  var BAD = { failed: 1, timeout: 1, oom: 1, node_fail: 1, preempted: 1, cancelled: 1, upstream_failed: 1, lost: 1, not_submitted: 1 };
  var tbody = document.querySelector("#task-table tbody"), more = document.getElementById("task-more");
  function cell(tr, text) { var td = document.createElement("td"); td.textContent = text; tr.appendChild(td); }
  function page() {
    var frag = document.createDocumentFragment(), end = Math.min(filtered.length, shown + PAGE);
    for (var i = shown; i < end; i++) {
      var t = filtered[i], tr = document.createElement("tr"), st = D.states[t[2]];
      tr.dataset.task = label(t); tr.dataset.state = st;
      if (BAD[st]) tr.className = "bad";
      cell(tr, label(t) + (t[15] ? "  " + t[15] : "")); cell(tr, st.replace("_", " "));
      cell(tr, t[3] === null ? "–" : String(t[3])); cell(tr, String(t[12])); cell(tr, t[4]); cell(tr, t[5]); cell(tr, t[6]);
      cell(tr, dur(t[7])); cell(tr, dur(t[8])); cell(tr, t[9].toFixed(3)); cell(tr, size(t[10]) + (t[11] ? " / " + t[11] : ""));
      frag.appendChild(tr);
    }
    tbody.appendChild(frag); shown = end;
    more.hidden = shown >= filtered.length;
    document.getElementById("task-count").textContent = shown + " of " + filtered.length + " shown";
  }
  more.onclick = page;
  document.getElementById("task-filter").addEventListener("input", function (e) {
    var q = e.target.value.toLowerCase();
    filtered = !q ? rows : rows.filter(function (t) {
      return (label(t) + " " + D.states[t[2]] + " " + t[5] + " " + t[4] + " " + t[15]).toLowerCase().indexOf(q) >= 0;
    });
    tbody.textContent = ""; shown = 0; page();
  });

  resize(); draw(true); page();
  document.body.dataset.renderMs = String(Math.round(performance.now() - t0));
})();
