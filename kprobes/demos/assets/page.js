// The lesson page's stepper: reads the lesson data inlined in the page (kprobes/demos/page.py
// describes it) and draws the terminal's panels for the step the position points at.  It
// fetches nothing and keeps no state but the position, the selection and the design in
// focus; the address bar's #s=N is the step shown.
(function () {
  "use strict";

  var DATA = JSON.parse(document.getElementById("lesson-data").textContent);
  var head = DATA.head;
  var rows = DATA.rows;
  var designs = DATA.designs;
  var lockstep = designs.length >= 2;
  var columns = lockstep ? designs : [null];
  var REG_ORDER = DATA.reg_order;
  var ALWAYS = ["ip", "sp", "flags"];

  // Every step in full: each was stored as what differs from the one before it.
  var steps = [];
  (function () {
    var prev = {};
    for (var n = 0; n < DATA.steps.length; n++) {
      var full = Object.assign({}, prev, DATA.steps[n]);
      steps.push(full);
      prev = full;
    }
  })();
  var byNumber = {};
  steps.forEach(function (s) { byNumber[s.i] = s; });
  var rowOf = {};
  rows.forEach(function (r, n) {
    Object.keys(r.cells).forEach(function (k) { rowOf[r.cells[k]] = n; });
  });

  var pos = 0;
  var focus = lockstep ? designs[designs.length - 1] : null;
  var selection = null;        // {kind: "reg", name} or {kind: "slot", addr: hex16}

  // -- formatting, as the terminal renderer formats ------------------------------------

  function big(v) { return BigInt(v); }
  function hex16(v) { return big(v).toString(16).padStart(16, "0"); }
  function hexp(v) { return "0x" + big(v).toString(16); }
  function comma(n) { return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ","); }
  function offset(off) {       // Python's f"{off:+#05x}"
    var sign = off < 0 ? "-" : "+";
    var digits = Math.abs(off).toString(16);
    while ((sign + "0x" + digits).length < 5) { digits = "0" + digits; }
    return sign + "0x" + digits;
  }
  function esc(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;")
      .replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  }
  function span(cls, text) { return '<span class="' + cls + '">' + esc(text) + "</span>"; }
  function mark(ch) {
    if (ch === ">") { return span("m-here", ">"); }
    if (ch === "*") { return span("m-ran", "*"); }
    return " ";
  }
  function shortLabel(vector) { return DATA.labels[String(vector)].split(" (")[0]; }
  function vectorClass(vector) {
    return vector === 3 ? "v3" : (vector === 1 ? "v1" : "vx");
  }

  function headerText(s) {
    var parts = ["step " + s.i + "/" + s.n];
    if (s.trap_no !== null && s.trap_no !== undefined) {
      parts.push("trap " + s.trap_no);
      parts.push(DATA.labels[String(s.vector)]);
    }
    parts.push("clock " + comma(s.clock));
    if (s.design) { parts.push("design " + DATA.design_letters[s.design]); }
    return "── " + parts.join(" · ") + " ──";
  }

  // -- panels --------------------------------------------------------------------------

  function bytesHtml(bytes, repaired) {
    return bytes.split(" ").map(function (b, k) {
      var cls = "b" + (repaired && repaired.indexOf(k) >= 0 ? " rep" : "");
      return '<span class="' + cls + '" data-k="' + k + '">' + esc(b) + "</span>";
    }).join(" ");
  }

  function panel(cls, title, body) {
    return '<section class="panel ' + cls + '"><h3>' + esc(title) + "</h3><pre>" + body +
      "</pre></section>";
  }

  function codePanel(s) {
    if (!s.code || !s.code.length) { return ""; }
    var width = 20;
    s.code.forEach(function (r) { width = Math.max(width, r.bytes.length); });
    var lines = s.code.map(function (r) {
      var armed = r.armed ? span("armed", r.armed.padEnd(2)) : "  ";
      return '<span class="line insn" data-label="' + esc(r.label) + '">' + mark(r.mark) +
        " " + armed + "  " + hex16(r.addr) + "  " + esc(r.label.padEnd(20)) + " " +
        bytesHtml(r.bytes) + " ".repeat(width - r.bytes.length + 1) + esc(r.text) +
        "</span>";
    });
    return panel("code", "CODE (original bytes; armed column: the byte in memory now)",
      lines.join(""));
  }

  function slotPanel(s) {
    var slot = s.slot;
    if (!slot) { return ""; }
    var lines = [];
    slot.rows.forEach(function (r) {
      var lead = "    " + hex16(r.addr) + "  " + r.label.padEnd(20) + " ";
      lines.push('<span class="line insn" data-label="' + esc(slot.probe) + '">' +
        mark(r.mark) + esc(lead) + bytesHtml(r.bytes, r.repaired) +
        " ".repeat(Math.max(1, 21 - r.bytes.length)) + esc(r.text) + "</span>");
      if (r.repaired.length) {
        var marks = r.bytes.split(" ").map(function (b, k) {
          return r.repaired.indexOf(k) >= 0 ? "^^ " : "   ";
        }).join("").replace(/\s+$/, "");
        lines.push('<span class="line">' + " ".repeat(lead.length + 1) + span("rep", marks) +
          "  repaired</span>");
      }
    });
    if (slot.after) {
      lines.push('<span class="line">* ip is just past the copy: the step is done</span>');
    }
    return panel("slot", "SLOT (the copy of " + slot.probe + ")", lines.join(""));
  }

  function regsPanel(s) {
    var changed = {};
    s.changed.forEach(function (n) { changed[n] = true; });
    var lines = REG_ORDER.filter(function (n) {
      return n in s.regs && (changed[n] || ALWAYS.indexOf(n) >= 0);
    }).map(function (n) {
      var text = " " + n.padEnd(6) + " " + hex16(s.regs[n]);
      if (n === "flags") { text += " [TF=" + s.flags.TF + " IF=" + s.flags.IF + "]"; }
      else if (n === "ip") { text += " " + s.where.sym; }
      var sel = selection && selection.kind === "reg" && selection.name === n;
      return '<span class="line reg' + (sel ? " selected" : "") + '" data-reg="' + esc(n) +
        '" title="click: mark every step that wrote ' + esc(n) + '">' +
        (changed[n] ? mark("*") : " ") + esc(text) + "</span>";
    });
    return panel("regs", "REGS (* changed)", lines.join(""));
  }

  // The KPROBES panel's lines are the terminal's own (page.py has render.py draw them).
  function kprobesPanel(s) {
    var lines = s.panel_kprobes;
    var c = s.counters;
    var traps = "int3 " + c.int3 + "  #DB " + c.debug + "  slot insns " + c.slot_insns;
    return "<div>" + panel("kprobes", "KPROBES", lines.map(function (l) {
      return '<span class="line">' + esc(l) + "</span>";
    }).join("")) + panel("traps", "TRAPS (this lesson)",
      '<span class="line">' + esc(traps) + "</span>") + "</div>";
  }

  function stackPanel(s) {
    var lines = s.stack.map(function (r) {
      var addr = hex16(r.addr);
      var text = " " + addr + " sp" + offset(r.off) + "  " + hex16(r.value) + "  " +
        (r.swapped ? "" : r.sym.padEnd(22));    // a swapped slot's note names both values
      var sel = selection && selection.kind === "slot" && selection.addr === addr;
      return '<span class="line slotrow' + (sel ? " selected" : "") + '" data-slot="' + addr +
        '" title="click: mark every step that wrote this slot">' +
        (r.sp ? mark(">") : " ") + (r.changed ? mark("*") : " ") + esc(text) +
        (r.note ? " " + span("note", r.note) : "") + "</span>";
    });
    return panel("stack", "STACK (> sp, * changed)", lines.join(""));
  }

  function extraPanel(s) {
    if (!s.extra) { return ""; }
    return panel("extra", s.extra.title, s.extra.lines.map(function (l) {
      return '<span class="line">' + esc(l) + "</span>";
    }).join(""));
  }

  function frameHtml(s, isFocus) {
    return '<article class="frame' + (isFocus ? " focus" : "") + '" data-i="' + s.i +
      '" data-design="' + esc(s.design || "") + '">' +
      '<div class="step-header">' + esc(headerText(s)) + "</div>" +
      '<h2 class="step-title">' + esc(s.title) + "</h2>" +
      '<p class="narration">' + esc(s.narration) + "</p>" +
      codePanel(s) + slotPanel(s) +
      '<div class="pair">' + regsPanel(s) + kprobesPanel(s) + "</div>" +
      stackPanel(s) + extraPanel(s) + "</article>";
  }

  function missingHtml(design, phase) {
    var letter = DATA.design_letters[design];
    return '<article class="frame hatched missing" data-design="' + esc(design) + '">' +
      "<p>design (" + esc(letter) + ") has no " + esc(phase || "such") + " phase: " +
      esc(DATA.design_names[design]) + "</p></article>";
  }

  // -- the position --------------------------------------------------------------------

  function stepAt(n, design) {
    var cells = rows[n].cells;
    if ("" in cells) { return byNumber[cells[""]]; }
    var key = design === null ? Object.keys(cells)[0] : design;
    return key in cells ? byNumber[cells[key]] : null;
  }

  function focused(n) {
    var s = stepAt(n, focus);
    if (s) { return s; }
    for (var c = 0; c < columns.length; c++) {
      s = stepAt(n, columns[c]);
      if (s) { return s; }
    }
    return null;
  }

  function say(text) { document.getElementById("msg").textContent = text; }

  function moveTo(n) {
    if (n < 0 || n >= rows.length) { say("no such step"); return false; }
    pos = n;
    render();
    return true;
  }

  function search(pred, direction) {
    for (var n = pos + direction; n >= 0 && n < rows.length; n += direction) {
      if (pred(n)) { return moveTo(n); }
    }
    say("no such step");
    return false;
  }

  function isTrapRow(n) {
    return columns.some(function (d) {
      var s = stepAt(n, d);
      return s && s.trap_no !== null;
    });
  }

  function sameIp(direction) {
    var ip = String(big(focused(pos).where.ip));
    return search(function (n) {
      var s = stepAt(n, focus);
      return s !== null && String(big(s.where.ip)) === ip;
    }, direction);
  }

  function wrote(s) {
    if (!selection || !s) { return false; }
    if (selection.kind === "reg") { return s.changed.indexOf(selection.name) >= 0; }
    return s.stack.some(function (r) { return r.changed && hex16(r.addr) === selection.addr; });
  }

  function lastWrite() {
    if (!selection) { say("click a register or a stack slot first"); return false; }
    for (var n = pos; n >= 0; n--) {
      if (wrote(stepAt(n, focus))) { return moveTo(n); }
    }
    say("no step up to here wrote " + selectionName());
    return false;
  }

  function switchDesign() {
    if (!lockstep) { say("only one design was recorded"); return false; }
    focus = designs[(designs.indexOf(focus) + 1) % designs.length];
    for (var n = pos; n >= 0; n--) {
      if (stepAt(n, focus)) { pos = n; break; }
    }
    render();
    say("design (" + DATA.design_letters[focus] + ") in focus");
    return true;
  }

  function gotoStep(i) {
    if (!(i in byNumber)) { say("no step " + i); return false; }
    var s = byNumber[i];
    if (lockstep && s.design) { focus = s.design; }
    return moveTo(rowOf[i]);
  }

  function selectionName() {
    if (!selection) { return ""; }
    return selection.kind === "reg" ? "register " + selection.name
      : "stack slot " + selection.addr;
  }

  // -- drawing -------------------------------------------------------------------------

  function buildTimelines() {
    var out = [];
    columns.forEach(function (d) {
      var ticks = rows.map(function (r, n) {
        var s = stepAt(n, d);
        if (!s) {
          return '<button type="button" class="tick hatched" data-row="' + n +
            '" data-design="' + esc(d) + '" title="no ' + esc(r.phase) + ' phase in design (' +
            esc(DATA.design_letters[d]) + ')"><span class="lab">-</span>' +
            '<span class="mk"></span></button>';
        }
        var trap = s.trap_no !== null;
        var title = "step " + s.i + ": " + s.title +
          (trap ? " (trap " + s.trap_no + ", " + DATA.labels[String(s.vector)] + ")" : "");
        return '<button type="button" class="tick' + (trap ? " trap " + vectorClass(s.vector)
          : "") + '" data-row="' + n + '" data-design="' + esc(d || "") + '" data-i="' + s.i +
          '" title="' + esc(title) + '"><span class="lab">' +
          (trap ? esc(shortLabel(s.vector)) : "") + '</span><span class="mk"></span></button>';
      });
      var name = d ? '<span class="track-name">design (' + esc(DATA.design_letters[d]) +
        ")</span>" : "";
      out.push('<div class="timeline" data-design="' + esc(d || "") + '">' + name +
        ticks.join("") + "</div>");
    });
    document.getElementById("timelines").innerHTML = out.join("");
    var vectors = Object.keys(DATA.labels).map(Number).sort(function (a, b) { return a - b; });
    document.getElementById("legend").innerHTML = "timeline: " + vectors.map(function (v) {
      return '<span class="legend-swatch tick trap ' + vectorClass(v) + '">' +
        esc(shortLabel(v)) + "</span> " + esc(DATA.labels[String(v)]);
    }).concat(["^ the step shown", "w wrote the selected register or stack slot",
      lockstep ? "hatched: the design has no such phase" : ""]).filter(Boolean).join(" · ");
  }

  function drawTimelines() {
    var ticks = document.querySelectorAll("#timelines .tick");
    for (var t = 0; t < ticks.length; t++) {
      var tick = ticks[t];
      var n = Number(tick.dataset.row);
      var d = tick.dataset.design || null;
      var s = stepAt(n, d);
      var here = n === pos;
      var w = wrote(s);
      tick.classList.toggle("here", here);
      tick.classList.toggle("wrote", w);
      tick.querySelector(".mk").textContent = (here ? "^" : "") + (w ? "w" : "");
    }
  }

  function drawLockstep() {
    if (!lockstep) { return; }
    var html = ["<table><tr><th></th><th>phase</th>"];
    designs.forEach(function (d) {
      html.push("<th>design (" + esc(DATA.design_letters[d]) + ")</th>");
    });
    html.push("</tr>");
    rows.forEach(function (r, n) {
      html.push('<tr data-row="' + n + '"' + (n === pos ? ' class="current"' : "") + "><td>" +
        (n === pos ? ">" : "") + '</td><td class="phase">' + esc(r.phase || "") + "</td>");
      if ("" in r.cells) {
        var s = byNumber[r.cells[""]];
        html.push('<td class="cell" colspan="' + designs.length + '" data-row="' + n +
          '">step ' + s.i + ": " + esc(s.title) + "</td>");
      } else {
        designs.forEach(function (d) {
          if (d in r.cells) {
            var s = byNumber[r.cells[d]];
            html.push('<td class="cell" data-row="' + n + '" data-design="' + esc(d) +
              '">step ' + s.i + ": " + esc(s.title) +
              (s.trap_no !== null ? " [" + esc(shortLabel(s.vector)) + "]" : "") + "</td>");
          } else {
            html.push('<td class="cell hatched" data-row="' + n + '" data-design="' + esc(d) +
              '" data-phase="' + esc(r.phase || "") + '">(none in design ' +
              esc(DATA.design_letters[d]) + ")</td>");
          }
        });
      }
      html.push("</tr>");
    });
    html.push("</table>");
    var box = document.getElementById("lockstep");
    box.innerHTML = html.join("");
    // Keep the current row in the middle of the table's own scroll, not the window's.
    var row = box.querySelector("tr.current");
    box.scrollTop = Math.max(0, row.offsetTop - box.clientHeight / 2);
  }

  function framesHtml(n, withFocus) {
    var cells = rows[n].cells;
    if ("" in cells || !lockstep) {
      return frameHtml(stepAt(n, null), withFocus);
    }
    return designs.map(function (d) {
      var s = stepAt(n, d);
      return s ? frameHtml(s, withFocus && d === focus) : missingHtml(d, rows[n].phase);
    }).join("");
  }

  function render() {
    var s = focused(pos);
    var frames = document.getElementById("frames");
    frames.className = lockstep && !("" in rows[pos].cells) ? "two" : "";
    frames.innerHTML = framesHtml(pos, lockstep);
    document.getElementById("counter").textContent = "step " + s.i + "/" + s.n;
    document.getElementById("row-counter").textContent = lockstep
      ? "row " + (pos + 1) + "/" + rows.length + " · phase " + (rows[pos].phase || "-") +
        " · design (" + DATA.design_letters[focus] + ") in focus"
      : "";
    drawTimelines();
    drawLockstep();
    var sel = document.getElementById("selection");
    if (selection) {
      var at = steps.filter(function (x) { return wrote(x); }).map(function (x) { return x.i; });
      sel.innerHTML = "selected: <strong>" + esc(selectionName()) + "</strong>, written at " +
        (at.length ? "step" + (at.length > 1 ? "s " : " ") + at.join(", ") : "no step") +
        " (w on the timeline; the w key jumps to the last write; click it again to clear)";
    } else {
      sel.textContent = "click a register or a stack slot to mark every step that wrote it";
    }
    var hash = "#s=" + s.i;
    if (location.hash !== hash) {
      try { history.replaceState(null, "", hash); } catch (e) { location.replace(hash); }
    }
    say("");
  }

  function buildStoryboard() {
    var board = document.getElementById("storyboard");
    board.className = lockstep ? "two" : "";
    board.innerHTML = '<header class="board-head">' + esc("kpemu demo " + head.lesson + ": " +
      head.question) + "<br><small>" + esc(head.semantics) + " · " + steps.length +
      " steps</small></header>" + rows.map(function (r, n) {
      var inner = framesHtml(n, false);
      var two = lockstep && !("" in r.cells);
      return '<div class="card">' + (two ? '<div class="cols">' + inner + "</div>" : inner) +
        "</div>";
    }).join("");
  }

  function buildStatic() {
    document.getElementById("lesson-name").textContent = "kpemu demo " + head.lesson + ":";
    document.getElementById("question").textContent = head.question;
    document.getElementById("semantics").textContent = head.semantics + " · " +
      steps.length + " steps";
    document.getElementById("prose").textContent = DATA.prose;
    document.getElementById("after").textContent = DATA.after;
    var claims = (head.claims || []).map(function (c) {
      return "<li" + (c.ok ? "" : ' class="fail"') + ">" + (c.ok ? "[ok]   " : "[FAIL] ") +
        esc(c.text) + (c.detail ? "<br>&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;" +
        esc(c.detail) : "") + "</li>";
    });
    document.getElementById("claims").innerHTML = "<h2>Claims, checked over this trace</h2>" +
      "<ul>" + claims.join("") + "</ul>";
  }

  // -- input ---------------------------------------------------------------------------

  function clearHighlight() {
    document.querySelectorAll("#frames .hl, #frames .hlb").forEach(function (el) {
      el.classList.remove("hl");
      el.classList.remove("hlb");
    });
  }

  function onHover(event) {
    var byte = event.target.closest ? event.target.closest(".b") : null;
    clearHighlight();
    if (!byte) { return; }
    var insn = byte.closest(".insn");
    var label = insn.dataset.label;
    var k = byte.dataset.k;
    document.querySelectorAll("#frames .insn").forEach(function (row) {
      if (row.dataset.label === label) {
        row.classList.add("hl");
        var same = row.querySelector('.b[data-k="' + k + '"]');
        if (same) { same.classList.add("hlb"); }
      }
    });
  }

  function onClick(event) {
    var el = event.target.closest ? event.target.closest(".reg, .slotrow, .tick, .cell") : null;
    if (!el) { return; }
    if (el.classList.contains("reg") || el.classList.contains("slotrow")) {
      var pick = el.classList.contains("reg") ? {kind: "reg", name: el.dataset.reg}
        : {kind: "slot", addr: el.dataset.slot};
      var same = selection && selection.kind === pick.kind &&
        (selection.name === pick.name && selection.addr === pick.addr);
      selection = same ? null : pick;
      render();
      return;
    }
    if (el.dataset.design && lockstep) { focus = el.dataset.design; }
    moveTo(Number(el.dataset.row));
  }

  function toggleHelp(show) {
    var help = document.getElementById("help");
    help.hidden = show === undefined ? !help.hidden : !show;
  }

  function openGoto() {
    var form = document.getElementById("goto");
    form.hidden = false;
    var input = document.getElementById("goto-input");
    input.value = "";
    input.focus();
  }

  function closeGoto() {
    document.getElementById("goto").hidden = true;
    document.getElementById("goto-input").blur();
  }

  var KEYS = {
    "ArrowRight": function () { return moveTo(pos + 1); },
    "n": function () { return moveTo(pos + 1); },
    " ": function () { return moveTo(pos + 1); },
    "ArrowLeft": function () { return moveTo(pos - 1); },
    "p": function () { return moveTo(pos - 1); },
    "N": function () { return search(isTrapRow, 1); },
    "P": function () { return search(isTrapRow, -1); },
    "shift-ArrowRight": function () { return search(isTrapRow, 1); },
    "shift-ArrowLeft": function () { return search(isTrapRow, -1); },
    "j": function () { return sameIp(1); },
    "k": function () { return sameIp(-1); },
    "w": lastWrite,
    "g": openGoto,
    "d": switchDesign,
    "Home": function () { return moveTo(0); },
    "End": function () { return moveTo(rows.length - 1); },
    "?": function () { toggleHelp(); },
    "q": function () { toggleHelp(false); },
    "Escape": function () { toggleHelp(false); }
  };

  function onKey(event) {
    if (event.target && event.target.id === "goto-input") {
      if (event.key === "Escape") { closeGoto(); event.preventDefault(); }
      return;
    }
    if (event.ctrlKey || event.altKey || event.metaKey) { return; }
    var key = event.key;
    if (event.shiftKey && (key === "ArrowRight" || key === "ArrowLeft")) {
      key = "shift-" + key;
    }
    var action = KEYS[key];
    if (!action) { return; }
    event.preventDefault();
    action();
  }

  // #s=N: show step N (on load, and when the address bar's fragment is edited).
  function fromHash() {
    var m = /^#s=(\d+)$/.exec(location.hash);
    if (!m) { return false; }
    var i = Number(m[1]);
    if (!(i in byNumber)) {
      say("no step " + i + " (the lesson has " + steps.length + ")");
      return false;
    }
    if (focused(pos).i !== i) { gotoStep(i); }
    return true;
  }

  buildStatic();
  buildTimelines();
  buildStoryboard();
  var link = location.hash;
  if (!/^#s=\d+$/.test(link) || !(Number(link.slice(3)) in byNumber)) {
    render();
    if (link) { say("no step " + link.slice(1) + " in this lesson: step 1"); }
  } else {
    gotoStep(Number(link.slice(3)));
  }
  document.getElementById("first").addEventListener("click", function () { moveTo(0); });
  document.getElementById("back").addEventListener("click", function () { moveTo(pos - 1); });
  document.getElementById("forward").addEventListener("click", function () { moveTo(pos + 1); });
  document.getElementById("last").addEventListener("click", function () {
    moveTo(rows.length - 1);
  });
  document.getElementById("help-button").addEventListener("click", function () { toggleHelp(); });
  document.getElementById("goto").addEventListener("submit", function (event) {
    event.preventDefault();
    var text = document.getElementById("goto-input").value.trim();
    closeGoto();
    if (!/^\d+$/.test(text) || !gotoStep(Number(text))) { say("no step " + JSON.stringify(text)); }
  });
  document.addEventListener("keydown", onKey);
  document.getElementById("frames").addEventListener("mouseover", onHover);
  document.getElementById("frames").addEventListener("mouseleave", clearHighlight);
  document.body.addEventListener("click", onClick);
  window.addEventListener("hashchange", fromHash);
})();
