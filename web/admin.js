/* shopdesk admin page: prompts (edit, check, preview, save, diff, history, rollback), A/B tests,
 * knowledge base, analytics. Plain DOM, no framework; every call goes to /api/admin with the staff token. */
(function () {
  "use strict";
  const $ = (sel) => document.querySelector(sel);
  const TOKEN_KEY = "shopdesk.admin.token";
  let token = sessionStorage.getItem(TOKEN_KEY);
  let current = null; // the prompt being edited: {name, version, text, variables, max_length}


  const { h } = window.ShopdeskStaff;
  const api = window.ShopdeskStaff.client(() => token, () => signOut("Your session ended: please sign in again."));

  function pct(est) { return est && est.value !== null && est.value !== undefined ? (est.value * 100).toFixed(1) + " %" : "–"; }
  function ci(est, scale, unit) {
    if (!est || est.low === null || est.low === undefined) return est && est.n ? "n = " + est.n : "no data";
    const f = (x) => (x * scale).toFixed(scale === 100 ? 1 : 2) + unit;
    return "95 % CI " + f(est.low) + " – " + f(est.high) + " · n = " + est.n;
  }
  /** Destructive actions ask twice in place (no modal dialog): the first press arms the button. */
  function twice(button, question, action) {
    if (button.dataset.armed !== "1") {
      button.dataset.armed = "1"; button.dataset.label = button.textContent; button.textContent = question;
      setTimeout(() => { if (button.isConnected) { button.dataset.armed = ""; button.textContent = button.dataset.label; } }, 6000);
      return;
    }
    button.dataset.armed = ""; action();
  }
  function when(iso) { return iso ? new Date(iso).toLocaleString() : ""; }
  function busy(button, on) { if (button) button.disabled = on; }

  function renderDiff(pre, text) {
    pre.replaceChildren();
    for (const line of (text || "").split("\n")) {
      const cls = line.startsWith("+++") || line.startsWith("---") ? "hunk" : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : line.startsWith("@@") ? "hunk" : null;
      pre.append(cls ? h("span", { class: cls, text: line }) : document.createTextNode(line + "\n"));
    }
  }

  // ---- sign in ----------------------------------------------------------------------------------
  function signOut(message) {
    token = null; sessionStorage.removeItem(TOKEN_KEY);
    $("#app").hidden = true; $("#login").hidden = false; $("#logout").hidden = true; $("#whoami").textContent = "";
    $("#login-error").textContent = message || "";
  }

  async function start() {
    try {
      const me = await api("GET", "/api/staff/me");
      if (me.role !== "admin") { signOut("This page is for admins; " + me.name + " is a support agent."); return; }
      $("#whoami").textContent = "Signed in as " + me.name;
    } catch (e) { if (e.status !== 401) signOut(e.message); return; }
    $("#login").hidden = true; $("#app").hidden = false; $("#logout").hidden = false;
    selectTab("prompts");
  }

  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("#login-error").textContent = "";
    let body;
    try { body = await window.ShopdeskStaff.signIn($("#login-user").value, $("#login-pass").value); }
    catch (e) { $("#login-error").textContent = e.message; return; }
    if (body.role !== "admin") { $("#login-error").textContent = "This page is for admins; your account is a support agent."; return; }
    token = body.token; sessionStorage.setItem(TOKEN_KEY, token);
    $("#login-pass").value = "";
    start();
  });
  $("#logout").addEventListener("click", () => signOut(""));

  // ---- tabs (arrow keys move between them: the WAI-ARIA tabs pattern) ---------------------------
  const tabs = ["prompts", "abtests", "kb", "analytics", "inventory"];
  const loaders = { prompts: loadPrompts, abtests: loadTests, kb: loadKb, analytics: loadAnalytics, inventory: loadReorder };
  function selectTab(name, focus) {
    for (const t of tabs) {
      const tab = $("#tab-" + t), on = t === name;
      tab.setAttribute("aria-selected", String(on)); tab.tabIndex = on ? 0 : -1;
      $("#panel-" + t).hidden = !on;
      if (on && focus) tab.focus();
    }
    loaders[name]();
  }
  for (const t of tabs) {
    const tab = $("#tab-" + t);
    tab.addEventListener("click", () => selectTab(t));
    tab.addEventListener("keydown", (ev) => {
      const i = tabs.indexOf(t);
      if (ev.key === "ArrowRight") selectTab(tabs[(i + 1) % tabs.length], true);
      else if (ev.key === "ArrowLeft") selectTab(tabs[(i + tabs.length - 1) % tabs.length], true);
      else return;
      ev.preventDefault();
    });
  }

  // ---- prompts ----------------------------------------------------------------------------------
  async function loadPrompts() {
    const list = await api("GET", "/api/admin/prompts");
    const ul = $("#prompt-list");
    ul.replaceChildren(...list.map((p) => h("li", {}, h("button", {
      type: "button", "data-prompt": p.name, "aria-current": current && current.name === p.name ? "true" : null,
      onclick: () => openPrompt(p.name),
    }, [p.name + " · v" + p.version + (p.ab_test ? " · A/B" : ""), h("small", { text: p.description })]))));
    const sel = $("#ab-prompt");
    sel.replaceChildren(...list.map((p) => h("option", { value: p.name, text: p.name + " (v" + p.version + ")" })));
  }

  async function openPrompt(name) {
    const p = await api("GET", "/api/admin/prompts/" + name);
    current = p;
    for (const b of document.querySelectorAll("#prompt-list button")) b.setAttribute("aria-current", String(b.dataset.prompt === name));
    $("#prompt-editor").hidden = false;
    $("#prompt-title").textContent = name + " · v" + p.version;
    $("#prompt-info").textContent = p.description + " Variables the bot passes: " + (p.variables.join(", ") || "none") + ". Limit: " + p.max_length + " characters.";
    $("#prompt-text").value = p.text;
    $("#prompt-messages").replaceChildren();
    $("#preview-out").replaceChildren();
    $("#conflict").hidden = true;
    $("#history-view").replaceChildren();
    await loadHistory();
    $("#prompt-text").focus();
  }

  function showMessages(ok, lines, title) {
    const box = $("#prompt-messages");
    box.replaceChildren(h("p", { class: ok ? "good" : "bad", text: title }));
    if (lines && lines.length) box.append(h("ul", {}, lines.map((l) => h("li", { text: l }))));
  }

  $("#btn-validate").addEventListener("click", async (ev) => {
    busy(ev.target, true);
    try {
      const r = await api("POST", "/api/admin/prompts/" + current.name + "/validate", { text: $("#prompt-text").value });
      showMessages(r.ok, r.errors, r.ok ? "The prompt is valid." : "The prompt cannot be saved:");
      if (r.ok && r.rendered) $("#preview-out").replaceChildren(h("div", { class: "preview" }, [h("h3", { text: "Rendered with the sample values" }), h("pre", { text: r.rendered })]));
    } catch (e) { showMessages(false, [], e.message); } finally { busy(ev.target, false); }
  });

  $("#btn-preview").addEventListener("click", async (ev) => {
    busy(ev.target, true);
    const out = $("#preview-out");
    out.replaceChildren(h("p", { class: "muted", text: "Running one turn on the current model…" }));
    try {
      const r = await api("POST", "/api/admin/prompts/" + current.name + "/preview", {
        text: $("#prompt-text").value,
        message: $("#preview-message").value || "Hi!",
        customer_id: $("#preview-customer").value.trim() || null,
      });
      showMessages(true, [], "The prompt is valid.");
      const t = r.turn;
      out.replaceChildren(h("div", { class: "preview" }, [
        h("h3", { text: "Rendered with the sample values" }),
        h("pre", { id: "preview-rendered", text: r.rendered || "(this prompt has no sample values)" }),
        t.greeting ? h("p", {}, ["Greeting a new chat shows: ", h("span", { class: "bubble", id: "preview-greeting", text: t.greeting })]) : null,
        h("h3", { text: "One turn in a throwaway conversation (" + t.seconds + " s)" }),
        h("p", {}, [h("strong", { text: "Shopper: " }), t.message]),
        h("div", { class: "bubble", id: "preview-reply", text: t.reply || "(no reply)" }),
        t.replaced ? h("p", { class: "muted", text: "The grounding check replaced the model's draft." }) : null,
        h("h4", { text: "Tool calls" }),
        t.tool_calls.length ? h("table", {}, [h("thead", {}, h("tr", {}, ["Tool", "Arguments", "Outcome", "ms"].map((x) => h("th", { scope: "col", text: x })))),
          h("tbody", {}, t.tool_calls.map((c) => h("tr", {}, [h("td", { text: c.tool }), h("td", {}, h("code", { text: JSON.stringify(c.arguments) })), h("td", { text: c.outcome }), h("td", { class: "num", text: String(c.latency_ms) })])))])
          : h("p", { class: "muted", text: "none" }),
        h("details", {}, [h("summary", { text: "Prompts as sent in this turn (" + t.prompts.length + ")" }),
          ...t.prompts.map((p) => h("div", {}, [h("h5", { text: p.name }), h("pre", { text: p.text })]))]),
      ]));
    } catch (e) {
      out.replaceChildren();
      showMessages(false, (e.body && e.body.errors) || [], e.status === 422 ? "The prompt cannot be previewed:" : e.message);
    } finally { busy(ev.target, false); }
  });

  $("#btn-save").addEventListener("click", async (ev) => {
    busy(ev.target, true);
    const text = $("#prompt-text").value;
    try {
      const r = await api("PUT", "/api/admin/prompts/" + current.name, { text, base_version: current.version, note: $("#prompt-note").value || null });
      $("#prompt-note").value = "";
      await openPrompt(current.name);
      showMessages(true, [], "Saved as v" + r.version + ". The next chat turn uses it.");
      loadPrompts();
    } catch (e) {
      if (e.status === 409) showConflict(e.body, text);
      else showMessages(false, (e.body && e.body.errors) || [], e.status === 422 ? "Not saved. Fix this first:" : e.message);
    } finally { busy(ev.target, false); }
  });

  function showConflict(body, mine) {
    showMessages(false, [], "Not saved: " + body.detail);
    $("#conflict").hidden = false;
    $("#conflict-text").textContent = "You started from v" + body.base_version + "; the newest is v" + body.current_version + ".";
    renderDiff($("#conflict-diff"), body.diff);
    renderDiff($("#conflict-yours"), body.your_diff);
    $("#conflict-mine").value = mine;
    $("#btn-take-theirs").onclick = async () => {
      const keep = $("#conflict-mine").value;
      await openPrompt(current.name);
      $("#conflict").hidden = false; $("#conflict-mine").value = keep;
      showMessages(true, [], "Loaded v" + current.version + ". Re-apply your change, then save.");
    };
  }

  async function loadHistory() {
    const rows = await api("GET", "/api/admin/prompts/" + current.name + "/versions");
    $("#history tbody").replaceChildren(...rows.map((v) => h("tr", {}, [
      h("td", { text: "v" + v.version }), h("td", { text: v.source }), h("td", { text: v.note || "" }),
      h("td", { text: v.author || "" }), h("td", { text: when(v.created_at) }),
      h("td", {}, [
        h("button", { type: "button", "data-view": v.version, onclick: () => viewVersion(v.version) }, "View"),
        " ",
        v.version !== current.version ? h("button", { type: "button", "data-diff": v.version, onclick: () => diffVersion(v.version) }, "Diff with v" + current.version) : null,
        " ",
        v.version !== current.version ? h("button", { type: "button", "data-rollback": v.version, onclick: (ev) => twice(ev.currentTarget, "Confirm: roll back to v" + v.version, () => rollbackTo(v.version)) }, "Roll back to this") : null,
      ]),
    ])));
  }
  async function viewVersion(v) {
    const r = await api("GET", "/api/admin/prompts/" + current.name + "/versions/" + v);
    $("#history-view").textContent = r.text;
  }
  async function diffVersion(v) {
    const r = await api("GET", "/api/admin/prompts/" + current.name + "/diff?a=" + v + "&b=" + current.version);
    renderDiff($("#history-view"), r.diff || "(no difference)");
  }
  async function rollbackTo(v) {
    try {
      const r = await api("POST", "/api/admin/prompts/" + current.name + "/rollback", { to_version: v, base_version: current.version });
      await openPrompt(current.name);
      showMessages(true, [], "Rolled back: v" + v + "'s text is now v" + r.version + ".");
      loadPrompts();
    } catch (e) {
      if (e.status === 409) showConflict(e.body, $("#prompt-text").value);
      else showMessages(false, (e.body && e.body.errors) || [], e.message);
    }
  }

  // ---- A/B tests --------------------------------------------------------------------------------
  async function loadTests() {
    await loadPrompts();
    const tests = await api("GET", "/api/admin/abtests");
    $("#ab-list tbody").replaceChildren(...tests.map((t) => h("tr", {}, [
      h("td", { text: "#" + t.id }), h("td", { text: t.prompt_name }), h("td", { text: "v" + t.version_a }), h("td", { text: "v" + t.version_b }),
      h("td", { text: Math.round(t.share_b * 100) + " %" }),
      h("td", { text: t.status + (t.winner ? " · promoted v" + t.winner : "") }),
      h("td", {}, h("button", { type: "button", onclick: () => showReport(t.id) }, "Report")),
    ])));
  }

  $("#ab-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("#ab-messages").textContent = "";
    try {
      const t = await api("POST", "/api/admin/abtests", {
        prompt_name: $("#ab-prompt").value, version_a: Number($("#ab-a").value), version_b: Number($("#ab-b").value),
        share_b: Number($("#ab-share").value) / 100,
      });
      $("#ab-messages").textContent = "Test #" + t.id + " started: new conversations are split from now on.";
      await loadTests(); showReport(t.id);
    } catch (e) { $("#ab-messages").textContent = e.message; }
  });

  const METRICS = [
    ["resolution_without_handoff", "Resolved without handoff", true],
    ["handoff_rate", "Handoff rate", true],
    ["thumbs_up_rate", "Thumbs up (of votes)", true],
    ["satisfaction", "Satisfaction (1–5)", false],
    ["grounding_fix_rate", "Replies needing a grounding repair", true],
  ];
  async function showReport(id) {
    const r = await api("GET", "/api/admin/abtests/" + id);
    const t = r.test, A = r.arms.A, B = r.arms.B;
    const fmt = (est, rate) => rate ? pct(est) : (est.value === null ? "–" : est.value.toFixed(2));
    const diffFmt = (est, rate) => est.value === null ? "–" : (est.value >= 0 ? "+" : "") + (rate ? (est.value * 100).toFixed(1) + " pts" : est.value.toFixed(2)) +
      (est.low !== null ? " (" + (rate ? (est.low * 100).toFixed(1) : est.low.toFixed(2)) + " … " + (rate ? (est.high * 100).toFixed(1) : est.high.toFixed(2)) + ")" : "");
    const rows = METRICS.map(([k, label, rate]) => h("tr", {}, [
      h("th", { scope: "row", text: label + (r.higher_is_better[k] ? " ↑" : " ↓") }),
      h("td", {}, [fmt(A[k], rate), h("div", { class: "muted", text: ci(A[k], rate ? 100 : 1, rate ? " %" : "") })]),
      h("td", {}, [fmt(B[k], rate), h("div", { class: "muted", text: ci(B[k], rate ? 100 : 1, rate ? " %" : "") })]),
      h("td", { text: diffFmt(r.b_minus_a[k], rate) }),
    ]));
    const actions = t.status === "running" ? h("div", { class: "buttons" }, [
      h("button", { type: "button", onclick: () => stopTest(id, null) }, "Stop without promoting"),
      h("button", { type: "button", onclick: () => stopTest(id, "A") }, "Stop and keep A (v" + t.version_a + ")"),
      h("button", { type: "button", class: "primary", onclick: () => stopTest(id, "B") }, "Stop and promote B (v" + t.version_b + ")"),
    ]) : h("p", { class: "muted", text: "Stopped " + when(t.stopped_at) + (t.winner ? "; v" + t.winner + " promoted." : ".") });
    $("#ab-report").replaceChildren(h("h3", { text: "Test #" + id + ": " + t.prompt_name + " v" + t.version_a + " (A) vs v" + t.version_b + " (B)" }),
      h("p", { class: "muted", text: "Assigned conversations: A " + A.assigned + ", B " + B.assigned + "; with a shopper message: A " + A.conversations + ", B " + B.conversations +
        ". Intervals are 95 % (Wilson for rates, t for means; B − A: Newcombe / Welch). An interval that crosses 0 is not a difference yet." }),
      h("table", {}, [h("thead", {}, h("tr", {}, ["Metric", "A", "B", "B − A"].map((x) => h("th", { scope: "col", text: x })))), h("tbody", {}, rows)]),
      actions);
  }
  async function stopTest(id, promote) {
    try { await api("POST", "/api/admin/abtests/" + id + "/stop", { promote }); await loadTests(); showReport(id); }
    catch (e) { $("#ab-messages").textContent = e.message; }
  }

  // ---- knowledge base ---------------------------------------------------------------------------
  let editingDoc = null;
  async function loadKb() {
    const docs = await api("GET", "/api/admin/kb");
    $("#kb-list tbody").replaceChildren(...docs.map((d) => h("tr", {}, [
      h("td", {}, h("code", { text: d.name })), h("td", { text: d.title }), h("td", { class: "num", text: String(d.sections) }),
      h("td", { class: "num", text: (d.bytes / 1024).toFixed(1) + " KiB" }), h("td", { text: when(d.modified) }),
      h("td", {}, [h("button", { type: "button", onclick: () => editDoc(d.name) }, "Edit"), " ",
        h("button", { type: "button", class: "danger", onclick: (ev) => twice(ev.currentTarget, "Confirm: delete " + d.name, () => deleteDoc(d.name)) }, "Delete")]),
    ])));
  }
  async function editDoc(name) {
    const r = await api("GET", "/api/admin/kb/" + name);
    editingDoc = name;
    $("#kb-editor").hidden = false; $("#kb-editing").textContent = "Editing " + name;
    $("#kb-text").value = r.text; $("#kb-text").focus();
  }
  $("#kb-close").addEventListener("click", () => { $("#kb-editor").hidden = true; editingDoc = null; });
  $("#kb-save").addEventListener("click", async (ev) => {
    busy(ev.target, true);
    try {
      const r = await api("PUT", "/api/admin/kb/" + editingDoc, { text: $("#kb-text").value });
      $("#kb-messages").textContent = "Saved " + r.name + " (" + r.sections + " sections), searchable now.";
      loadKb();
    } catch (e) { $("#kb-messages").textContent = e.message; } finally { busy(ev.target, false); }
  });
  async function deleteDoc(name) {
    try { await api("DELETE", "/api/admin/kb/" + name); $("#kb-messages").textContent = "Deleted " + name + "."; loadKb(); }
    catch (e) { $("#kb-messages").textContent = e.message; }
  }
  $("#kb-upload").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const file = $("#kb-file").files[0];
    if (!file) return;
    const text = await file.text();
    try {
      const r = await api("POST", "/api/admin/kb", { filename: file.name, text });
      $("#kb-messages").textContent = "Uploaded " + r.name + " (" + r.sections + " sections), searchable now.";
      $("#kb-file").value = ""; loadKb();
    } catch (e) { $("#kb-messages").textContent = "Not uploaded: " + e.message; }
  });
  $("#kb-search").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams({ q: $("#kb-q").value, k: "5" });
    if ($("#kb-type").value) q.set("type", $("#kb-type").value);
    try {
      const r = await api("GET", "/api/admin/kb/search?" + q);
      $("#kb-results").replaceChildren(...(r.passages.length ? r.passages.map((p) => h("li", {}, [
        h("strong", { text: p.title + (p.section ? " › " + p.section : "") }), " ", h("code", { text: p.source + (p.anchor ? "#" + p.anchor : "") }),
        h("span", { class: "muted", text: " score " + p.score.toFixed(4) }), h("pre", { text: p.text }),
      ])) : [h("li", { text: "Nothing found." })]));
    } catch (e) { $("#kb-results").replaceChildren(h("li", { class: "bad", text: e.message })); }
  });

  // ---- analytics (charts are inline SVG built here) ---------------------------------------------
  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs, children) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    for (const c of [].concat(children || [])) el.append(c);
    return el;
  }
  function barChart(target, rows, series, label) {
    // rows: [{label, values:[...]}] stacked in `series` order; an accessible table-like title per bar.
    const width = 520, barH = 18, gap = 6, left = 150, height = Math.max(1, rows.length) * (barH + gap) + 10;
    const max = Math.max(1, ...rows.map((r) => r.values.reduce((a, b) => a + b, 0)));
    const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", "aria-label": label });
    if (!rows.length) svg.append(s("text", { x: 4, y: 14 }, "no data"));
    rows.forEach((r, i) => {
      const y = 4 + i * (barH + gap);
      svg.append(s("text", { x: 0, y: y + 13 }, r.label.length > 22 ? r.label.slice(0, 21) + "…" : r.label));
      let x = left;
      r.values.forEach((v, j) => {
        const w = (v / max) * (width - left - 40);
        if (w > 0) svg.append(s("rect", { x, y, width: w, height: barH, fill: series[j].color }, s("title", {}, `${r.label}: ${series[j].name} ${v}`)));
        x += w;
      });
      svg.append(s("text", { x: x + 4, y: y + 13 }, String(r.values.reduce((a, b) => a + b, 0))));
    });
    const legend = h("p", { class: "muted" }, series.map((sr) => h("span", {}, [h("span", { style: `display:inline-block;width:.8em;height:.8em;background:${sr.color};margin:0 .3em 0 .8em` }), sr.name])));
    target.replaceChildren(svg, series.length > 1 ? legend : "");
  }

  function card(title, value, sub) {
    return h("div", { class: "card" }, [h("div", { class: "muted", text: title }), h("div", { class: "v", text: value }), h("div", { class: "ci", text: sub || "" })]);
  }

  async function loadAnalytics() {
    const a = await api("GET", "/api/admin/analytics?days=" + $("#an-days").value);
    const sr = a.suggested_replies, g = a.grounding;
    $("#an-cards").replaceChildren(
      card("Conversations", String(a.conversations), "with at least one shopper message"),
      card("Resolved without handoff", pct(a.resolution_without_handoff), ci(a.resolution_without_handoff, 100, " %")),
      card("Handoff rate", pct(a.handoff_rate), ci(a.handoff_rate, 100, " %")),
      card("Satisfaction", a.satisfaction.value === null ? "–" : a.satisfaction.value.toFixed(2) + " / 5", ci(a.satisfaction, 1, "")),
      card("Thumbs up", pct(a.thumbs_up_rate), a.thumbs.up + " up, " + a.thumbs.down + " down"),
      card("Time to first token", a.ttft_ms.median === null ? "–" : a.ttft_ms.median + " ms", "median; p95 " + (a.ttft_ms.p95 ?? "–") + " ms; n = " + a.ttft_ms.n),
      card("Grounding", g.checked + " checked", g.repaired + " repaired, " + g.replaced + " replaced"),
      card("Suggested replies", pct(sr.acceptance_rate) + " accepted", pct(sr.edit_rate) + " edited · " + sr.offered + " offered"),
    );
    barChart($("#chart-days"), a.per_day.map((d) => ({ label: d.day, values: [d.resolved, d.handed_off, d.conversations - d.resolved - d.handed_off] })),
      [{ name: "resolved", color: "#1a7f37" }, { name: "handed off", color: "#d4a72c" }, { name: "other", color: "#8c959f" }], "Conversations per day");
    barChart($("#chart-reasons"), a.handoff_reasons.map((r) => ({ label: r.trigger + (r.reason ? ": " + r.reason : ""), values: [r.count] })), [{ name: "handoffs", color: "#d4a72c" }], "Handoff reasons");
    barChart($("#chart-ratings"), ["5", "4", "3", "2", "1"].map((k) => ({ label: k + " ★", values: [a.ratings[k]] })), [{ name: "ratings", color: "#2457c5" }], "Satisfaction ratings");
    barChart($("#chart-tools"), a.tools.map((t) => ({ label: t.tool, values: [t.outcomes.ok || 0, t.calls - (t.outcomes.ok || 0)] })),
      [{ name: "ok", color: "#2457c5" }, { name: "other outcomes", color: "#8c959f" }], "Tool use");
    $("#an-unanswered tbody").replaceChildren(...(a.unanswered.length ? a.unanswered.map((u) => h("tr", {}, [h("td", { text: u.question }), h("td", { class: "num", text: String(u.count) }), h("td", { text: u.example })]))
      : [h("tr", {}, h("td", { colspan: "3", class: "muted", text: "none in this period" }))]));
  }
  $("#an-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadAnalytics(); });
  $("#an-csv").addEventListener("click", async () => {
    const days = $("#an-days").value;
    const res = await fetch("/api/admin/analytics/export.csv?days=" + days, { headers: { Authorization: "Bearer " + token } });
    if (!res.ok) return;
    const url = URL.createObjectURL(await res.blob());
    const a = h("a", { href: url, download: "shopdesk-conversations-" + days + "d.csv" });
    document.body.append(a); a.click(); a.remove(); URL.revokeObjectURL(url);
  });

  // ---- inventory: the reorder list, and one variant's forecast, plot and restock outlook ---------------
  function options(o) { return Object.entries(o || {}).map(([k, v]) => k + " " + v).join(", "); }
  function num(x, digits) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }
  async function loadReorder() {
    const limit = $("#inv-limit").value;
    $("#inv-status").classList.remove("warn");
    $("#inv-status").textContent = "Loading the reorder list (if the forecasts of this store day are not ready yet, up to a minute)…";
    try {
      const r = await api("GET", "/api/inventory/reorder" + (limit ? "?limit=" + limit : ""));
      const lagDays = r.sales_through ? Math.round((Date.parse(r.as_of) - Date.parse(r.sales_through)) / 864e5) - 1 : null;
      $("#inv-status").textContent = r.count + " variant(s) to reorder as of " + r.as_of + (limit && r.count > r.lines.length ? "; showing the " + r.lines.length + " most urgent." : ".")
        + (r.sales_through === null ? " No sales are recorded yet: the forecasts have nothing to go on."
          : lagDays > 0 ? " Sales are recorded only through " + r.sales_through + " (" + lagDays + " day(s) missing): check the sales feed." : "");
      $("#inv-status").classList.toggle("warn", r.sales_through === null || lagDays > 0);
      $("#inv-reorder tbody").replaceChildren(...(r.lines.length ? r.lines.map((l) => h("tr", { "data-variant": l.variant_id }, [
        h("td", {}, [h("strong", { text: l.product_name }), " ", h("span", { class: "muted", text: options(l.options) }), h("div", {}, h("code", { text: l.variant_id }))]),
        h("td", { text: l.supplier || "none on record" }),
        h("td", { class: "num", text: String(l.stock_on_hand) }), h("td", { class: "num", text: String(l.on_order) }),
        h("td", { class: "num", text: num(l.daily_demand, 2) }), h("td", { class: "num", text: num(l.days_of_cover, 1) }),
        h("td", { class: "num", text: l.lead_time_days[0] + "–" + l.lead_time_days[1] + " d" }),
        h("td", { class: "num", text: num(l.reorder_point, 1) }), h("td", { class: "num", text: String(l.order_qty) }),
        h("td", { class: l.urgency_days < 0 ? "num bad" : "num", text: num(l.urgency_days, 1) + " d", title: l.note }),
        h("td", {}, h("button", { type: "button", onclick: () => showVariant(l.variant_id) }, "Forecast")),
      ])) : [h("tr", {}, h("td", { colspan: "11", class: "muted", text: "Nothing to reorder now." }))]));
    } catch (e) { $("#inv-status").textContent = "Could not load the reorder list: " + e.message; }
  }
  let plotUrl = null;
  async function showVariant(id) {
    $("#inv-status").classList.remove("warn");
    $("#inv-status").textContent = "Forecasting " + id + "…";
    try {
      const [fc, outlook] = await Promise.all([api("GET", "/api/forecast/" + encodeURIComponent(id)), api("GET", "/api/inventory/outlook/" + encodeURIComponent(id))]);
      const res = await fetch("/api/forecast/" + encodeURIComponent(id) + ".png", { headers: { Authorization: "Bearer " + token } });
      if (plotUrl) URL.revokeObjectURL(plotUrl);
      plotUrl = res.ok ? URL.createObjectURL(await res.blob()) : null;
      const plot = $("#inv-plot");
      if (plotUrl) { plot.src = plotUrl; plot.alt = "Sales and forecast of " + fc.product_name + " " + options(fc.options); plot.hidden = false; } else plot.hidden = true;
      $("#inv-title").textContent = fc.product_name + " · " + options(fc.options) + " (" + id + ")";
      $("#inv-outlook").textContent = outlook.explanation;
      const bt = fc.backtest;
      $("#inv-facts").textContent = "Model " + fc.model + " (" + fc.demand_kind + " demand, " + fc.history_days + " days of history"
        + (fc.censored_days ? ", " + fc.censored_days + " sold-out days left out" : "") + "); backtest MASE " + num(bt.mase, 3) + " over " + bt.windows + " windows; "
        + "forecast " + num(fc.points.reduce((a, p) => a + p.mean, 0), 1) + " units over the next " + fc.points.length + " days.";
      $("#inv-notes").replaceChildren(...fc.notes.map((n) => h("li", { text: n })));
      $("#inv-detail").hidden = false; $("#inv-detail").scrollIntoView({ block: "start" });
      $("#inv-status").textContent = "";
    } catch (e) {
      $("#inv-detail").hidden = true; // never leave another variant's plot under this id
      $("#inv-status").textContent = e.status === 404 ? "No variant " + id + "." : "Could not forecast " + id + ": " + e.message; }
  }
  $("#inv-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadReorder(); });
  $("#inv-lookup").addEventListener("submit", (ev) => { ev.preventDefault(); showVariant($("#inv-variant").value.trim()); });

  if (token) start(); else signOut("");
})();
