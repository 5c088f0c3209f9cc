/* shopdesk support console: the queue, a live transcript with the bot's tool calls, take over / reply /
 * release / hand back / close, and suggested replies (streamed draft, cards with sources, proposed
 * actions that run only after the agent's Confirm). Plain DOM, no framework.
 *
 * Commands go through REST (/api/agent/...); /ws/agent only tells us what changed, so after a
 * reconnect the page reloads the queue and the open transcript and loses nothing.
 * Safety: text from shoppers, the bot, agents and suggestions goes in with textContent only. */
(function () {
  "use strict";
  const $ = (sel) => document.querySelector(sel);
  const TOKEN_KEY = "shopdesk.agent.token";
  const PING_MS = 20000;

  let token = sessionStorage.getItem(TOKEN_KEY);
  let me = null; // {id, name, role}
  let queue = []; // the last /queue answer's conversations
  let current = null; // the open conversation's detail (GET /conversations/{id})
  let seen = new Set(); // message ids in the transcript
  let fromSuggestion = null; // {id, text}: the suggestion the reply box started from
  let ws = null, attempt = 0, retryTimer = null, pingTimer = null, stopped = true;
  let queueTimer = null;
  let loading = 0, held = []; // REST reloads in flight; live events that came meanwhile

  // ---- helpers ----------------------------------------------------------------------------------

  const { h } = window.ShopdeskStaff;
  const api = window.ShopdeskStaff.client(() => token, () => signOut("Your session ended: please sign in again."));

  function notice(text) { $("#notice").textContent = text || ""; }
  function fail(err) { if (err && err.status !== 401) notice(err.message || String(err)); }

  function duration(s) {
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s";
    return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " min";
  }
  function clock(iso) { return iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : ""; }

  /** VADER compound (-1..1) as a coloured label; the word carries the meaning, not only the colour. */
  function sentimentLabel(value) {
    if (value === null || value === undefined) return null;
    const v = Number(value);
    const [word, cls] = v <= -0.5 ? ["angry", "neg2"] : v < -0.05 ? ["unhappy", "neg1"] : v > 0.3 ? ["happy", "pos"] : ["neutral", "neu"];
    return h("span", { class: "badge mood " + cls, title: "sentiment " + v.toFixed(2), text: word + " " + (v > 0 ? "+" : "") + v.toFixed(2) });
  }
  function stateBadge(state) { return h("span", { class: "state st-" + state, text: state }); }

  /** A link for a citation, as the widget makes them: policies/<page>.md -> /policies/<page>#anchor. */
  function citationNode(c) {
    const label = c.section || c.title || c.source;
    if (!label) return null;
    const m = /^policies\/([a-z0-9-]+)\.md$/.exec(c.source || "");
    if (!m) return h("span", { class: "cite", text: label });
    const href = "/policies/" + m[1] + (c.anchor ? "#" + encodeURIComponent(c.anchor) : "");
    return h("a", { class: "cite", href, target: "_blank", rel: "noopener", text: label });
  }

  function citationsNode(list) {
    const links = (list || []).map(citationNode).filter(Boolean);
    if (!links.length) return null;
    return h("div", { class: "cites" }, ["Sources: ", ...links.flatMap((a, i) => (i ? [", ", a] : [a]))]);
  }

  /** A store card (order, list, products...) in a compact form: facts for the agent, from data. */
  function cardNode(card) {
    if (!card || typeof card !== "object") return null;
    if (card.kind === "order") {
      return h("div", { class: "card card-order" }, [
        h("strong", { text: "Order " + (card.id || "") }), " ",
        h("span", { class: "badge st-" + String(card.status || "").replace(/\W/g, ""), text: card.status || "" }),
        card.total !== undefined ? h("span", { class: "muted", text: " · total $" + Number(card.total).toFixed(2) }) : null,
        card.items && card.items.length ? h("div", { class: "muted", text: card.items.map((i) => i.name).filter(Boolean).join(", ") }) : null,
      ]);
    }
    if (card.kind === "order_list") {
      return h("div", { class: "card" }, [h("strong", { text: "Orders" }),
        h("ul", {}, (card.orders || []).map((o) => h("li", { text: [o.id, o.status, o.created_at ? String(o.created_at).slice(0, 10) : ""].filter(Boolean).join(" · ") })))]);
    }
    return h("div", { class: "card" }, [h("strong", { text: String(card.kind || "card") }),
      h("dl", {}, Object.entries(card).filter(([k]) => k !== "kind").flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: typeof v === "object" ? JSON.stringify(v) : String(v) })]))]);
  }

  // ---- sign in ----------------------------------------------------------------------------------
  function signOut(message) {
    token = null; me = null; current = null; stopped = true;
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(retryTimer); clearInterval(pingTimer); clearInterval(queueTimer);
    if (ws) { const old = ws; ws = null; try { old.close(); } catch { /* closed */ } }
    $("#app").hidden = true; $("#login").hidden = false; $("#logout").hidden = true;
    $("#whoami").textContent = ""; setConn("offline", "");
    $("#login-error").textContent = message || "";
    $("#login-user").focus();
  }

  async function login(ev) {
    ev.preventDefault();
    $("#login-error").textContent = "";
    $("#login-submit").disabled = true;
    try {
      let body;
      try { body = await window.ShopdeskStaff.signIn($("#login-user").value, $("#login-pass").value); }
      catch (e) { $("#login-error").textContent = e.message; return; }
      token = body.token; sessionStorage.setItem(TOKEN_KEY, token);
      $("#login-pass").value = "";
      await start();
    } finally { $("#login-submit").disabled = false; }
  }

  async function start() {
    try { const r = await api("GET", "/api/staff/me"); me = { id: r.staff_id, name: r.name, role: r.role }; } catch { return; }
    $("#whoami").textContent = "Signed in as " + me.name + " (" + me.role + ")";
    $("#login").hidden = true; $("#app").hidden = false; $("#logout").hidden = false;
    stopped = false;
    await loadQueue();
    connect();
    clearInterval(queueTimer);
    queueTimer = setInterval(tickWaits, 1000);
    const first = $("#queue button");
    if (first) first.focus(); else $("#main").focus();
  }

  // ---- queue ------------------------------------------------------------------------------------
  async function loadQueue() {
    const states = $("#show-bot").checked ? "waiting,agent,bot" : "waiting,agent";
    let data;
    try { data = await api("GET", "/api/agent/queue?states=" + states); } catch (err) { fail(err); return; }
    const fetchedAt = Date.now();
    queue = data.conversations.map((c) => ({ ...c, since: c.waiting_s !== null && c.waiting_s !== undefined ? fetchedAt - c.waiting_s * 1000 : null }));
    $("#online").textContent = data.agents_online + " agent" + (data.agents_online === 1 ? "" : "s") + " online";
    renderQueue();
  }

  function renderQueue() {
    const list = $("#queue");
    const focused = document.activeElement && document.activeElement.closest("#queue li");
    const focusedId = focused ? focused.dataset.id : null;
    list.replaceChildren();
    for (const c of queue) {
      const who = c.customer ? c.customer.name || c.customer.id : c.identity === "guest" ? "Guest" : "Verified guest";
      const button = h("button", { type: "button", "aria-current": current && current.id === c.id ? "true" : null, onclick: () => openConversation(c.id) }, [
        h("span", { class: "row" }, [
          stateBadge(c.state),
          h("strong", { class: "who", text: who }),
          c.since !== null && c.state === "waiting" ? h("span", { class: "wait", "data-since": String(c.since), text: duration((Date.now() - c.since) / 1000) }) : null,
        ]),
        h("span", { class: "row" }, [
          sentimentLabel(c.sentiment),
          c.sentiment_min !== null && c.sentiment_min !== undefined && c.sentiment_min < c.sentiment - 0.2 ? h("span", { class: "muted small", text: "low " + Number(c.sentiment_min).toFixed(2) }) : null,
          c.fraud_flag ? h("span", { class: "badge fraud", text: "fraud flag" }) : null,
          ...(c.tags || []).map((t) => h("span", { class: "badge tag", text: t })),
          c.agent ? h("span", { class: "muted small", text: "· " + (c.agent.name || "agent") }) : null,
        ]),
        c.handoff_reason ? h("span", { class: "muted small reason", text: c.handoff_reason }) : null,
        c.last_message ? h("span", { class: "last", text: c.last_message.text }) : null,
      ]);
      list.append(h("li", { "data-id": c.id, "data-state": c.state }, button));
    }
    $("#queue-empty").hidden = queue.length > 0;
    if (focusedId) {
      const again = list.querySelector(`li[data-id="${CSS.escape(focusedId)}"] button`);
      if (again) again.focus();
    }
  }

  function tickWaits() {
    for (const el of document.querySelectorAll("#queue .wait")) el.textContent = duration((Date.now() - Number(el.dataset.since)) / 1000);
  }

  // ---- a conversation ---------------------------------------------------------------------------
  async function openConversation(id) {
    if (current && current.id !== id) send({ type: "unwatch", conversation_id: current.id });
    notice("");
    if (!current || current.id !== id) { fromSuggestion = null; $("#reply").value = ""; $("#reply-from").textContent = ""; }
    current = { id };
    send({ type: "watch", conversation_id: id });
    await loadConversation();
    renderQueue();
  }

  /** Reload from REST. Live events that arrive meanwhile are held and replayed on the fresh transcript
   * (deduplicated by id), so a message stored after the request started is not wiped by the redraw. */
  async function loadConversation() {
    if (!current) return;
    const id = current.id;
    loading += 1;
    let detail;
    try { detail = await api("GET", "/api/agent/conversations/" + encodeURIComponent(id)); } catch (err) { fail(err); loading -= 1; held = []; return; }
    loading -= 1;
    if (!current || current.id !== id) return;
    current = detail;
    $("#conv-none").hidden = true; $("#conv").hidden = false;
    renderHeader();
    renderTranscript();
    renderRisk();
    renderSuggestions(detail.suggestions || []);
    if (!loading) { const replay = held; held = []; for (const e of replay) onConversationEvent(e); }
  }

  function mine() {
    return current && current.state === "agent" && current.agent && (current.agent.id === me.id || me.role === "admin");
  }

  function renderHeader() {
    const c = current;
    $("#conv-title").textContent = c.customer ? c.customer.name + " (" + c.customer.id + ")" : c.identity === "guest" ? "Guest" : "Verified guest";
    $("#conv-state").className = "state st-" + c.state;
    $("#conv-state").textContent = c.state;
    $("#conv-fraud").hidden = !c.fraud_flag;
    $("#conv-agent").textContent = c.agent && c.agent.name ? "with " + c.agent.name : "";
    $("#conv-tags").replaceChildren(...(c.tags || []).map((t) => h("span", { class: "badge tag", text: t })));
    $("#conv-reason").textContent = c.handoff_reason && c.state !== "bot" ? "Why: " + c.handoff_reason : "";
    $("#btn-take").disabled = !(c.state === "waiting" || c.state === "bot");
    $("#btn-release").disabled = !mine();
    $("#btn-handback").disabled = !(c.state === "waiting" || mine());
    $("#btn-close").disabled = c.state === "closed" || (c.state === "agent" && !mine());
    const canWrite = mine();
    $("#reply").disabled = !canWrite; $("#send").disabled = !canWrite;
    $("#reply").placeholder = canWrite ? "Write to the shopper (Enter sends, Shift+Enter: new line)" : "Take the conversation over to reply";
    for (const b of document.querySelectorAll("#suggestions button")) b.disabled = !canWrite;
    if (c.state === "closed") hideCloseForm();
  }

  /** Messages, the bot's tool calls, risk checks and state changes, in time order. */
  function renderTranscript() {
    const list = $("#transcript");
    list.replaceChildren();
    seen = new Set();
    const items = [
      ...current.messages.map((m, i) => ({ at: m.created_at, order: 2, i, node: () => messageNode(m) })),
      ...current.tool_calls.map((t, i) => ({ at: t.created_at, order: 1, i, node: () => toolNode(t) })),
      ...current.events.map((e, i) => ({ at: e.created_at, order: 3, i, node: () => eventNode(e) })),
    ];
    items.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : a.order - b.order || a.i - b.i));
    for (const item of items) list.append(item.node());
    for (const m of current.messages) seen.add(m.id);
    scrollDown();
  }

  function scrollDown() { const t = $("#transcript"); t.scrollTop = t.scrollHeight; }

  const WHO = { user: "Shopper", assistant: "Bot", agent: "Agent", system: "System" };

  /** Bot and agent text as the shopper sees it: the widget's Markdown renderer (DOM nodes only). */
  function markdown(tag, text) {
    const el = h(tag, { class: "text" });
    if (window.ShopDesk && window.ShopDesk.renderMarkdown) window.ShopDesk.renderMarkdown(text || "", el);
    else el.textContent = text || "";
    return el;
  }

  function messageNode(m) {
    const who = m.role === "agent" ? m.agent || WHO.agent : m.role === "user" && current && current.customer ? current.customer.name : WHO[m.role] || m.role;
    const li = h("li", { class: "msg msg-" + m.role, "data-id": m.id }, [
      h("div", { class: "meta" }, [
        h("strong", { text: who }), " ", h("span", { class: "muted", text: clock(m.created_at) }),
        m.role === "user" ? sentimentLabel(m.sentiment) : null,
        m.replaced ? h("span", { class: "badge", text: "replaced by the grounding check" }) : null,
      ]),
      m.role === "user" ? h("div", { class: "text", text: m.text }) : markdown("div", m.text),
      ...(m.cards || []).map(cardNode),
      citationsNode(m.citations),
    ]);
    return li;
  }

  function toolNode(t) {
    const ok = t.outcome === "ok" || t.outcome === "confirmed";
    return h("li", { class: "tool" }, h("details", {}, [
      h("summary", {}, [h("span", { "aria-hidden": "true", text: "⚙ " }), "Tool ", h("code", { text: t.tool }), " ",
        h("span", { class: "badge " + (ok ? "ok" : "warn"), text: t.outcome })]),
      h("div", { class: "small" }, [h("strong", { text: "Arguments " }), h("code", { text: JSON.stringify(t.arguments || {}) })]),
      t.text ? h("p", { class: "small", text: t.text }) : null,
      t.result && Object.keys(t.result).length ? h("pre", { text: JSON.stringify(t.result, null, 2) }) : null,
    ]));
  }

  function eventNode(e) {
    const parts = [e.from + " → " + e.to, e.trigger];
    if (e.agent) parts.push(e.agent);
    if (e.reason) parts.push(e.reason);
    return h("li", { class: "event", text: parts.join(" · ") });
  }

  function renderRisk() {
    const risk = current.risk || [];
    const box = $("#risk");
    box.hidden = !(risk.length && (current.fraud_flag || risk.some((r) => r.decision !== "allow")));
    box.open = Boolean(current.fraud_flag);
    $("#risk-list").replaceChildren(...risk.map((r) => h("li", {}, [
      h("strong", { text: [r.order_id, r.action].filter(Boolean).join(" · ") }), " ",
      h("span", { class: "badge " + (r.decision === "allow" ? "ok" : "warn"), text: r.decision }),
      h("span", { class: "muted", text: " score " + Number(r.score).toFixed(2) + " · " + clock(r.created_at) }),
      h("ul", {}, (r.reasons || []).map((x) => h("li", { text: typeof x === "object" ? x.description || x.code : String(x) }))),
    ])));
  }

  function appendLive(node, id) {
    if (id !== undefined && id !== null) { if (seen.has(id)) return; seen.add(id); }
    $("#transcript").append(node);
    scrollDown();
  }

  // ---- suggestions ------------------------------------------------------------------------------
  /** The suggestions for the shopper's last message (those already sent are marked, actions stay usable). */
  function renderSuggestions(list) {
    $("#draft").hidden = true; $("#draft").textContent = "";
    const ul = $("#suggestions");
    ul.replaceChildren(...(list || []).map(suggestionNode));
    $("#suggest").hidden = !ul.children.length;
    renderHeader();
  }

  function markSent(suggestionId) {
    const li = suggestionId && document.querySelector(`#suggestions li[data-id="${suggestionId}"]`);
    if (!li) return;
    li.classList.add("sent");
    for (const b of li.querySelectorAll(".buttons button")) b.remove();
    li.querySelector(".buttons").append(h("span", { class: "badge ok", text: "sent" }));
  }

  function suggestionNode(s) {
    const li = h("li", { class: "suggestion", "data-id": s.id });
    const use = h("button", { type: "button", class: "use", text: "Use", "aria-label": "Use suggestion " + (s.rank + 1) + " in the reply box",
      onclick: () => { $("#reply").value = s.text; fromSuggestion = { id: s.id, text: s.text }; $("#reply-from").textContent = "(from suggestion " + (s.rank + 1) + ")"; $("#reply").focus(); } });
    const asIs = h("button", { type: "button", class: "send-as-is", text: "Send as is", onclick: () => sendReply(s.text, s.id, asIs) });
    const sent = s.status === "accepted" || s.status === "edited";
    if (sent) li.classList.add("sent");
    li.append(markdown("div", s.text), s.card ? cardNode(s.card) : "", citationsNode(s.citations) || "",
      h("div", { class: "buttons" }, sent ? h("span", { class: "badge ok", text: "sent" }) : [use, asIs]));
    if (s.action) li.append(actionNode(s));
    return li;
  }

  /** A proposed write: the first click shows what would happen (confirm=false), Confirm runs it. */
  function actionNode(s) {
    const box = h("div", { class: "action", role: "group", "aria-label": "Proposed action" });
    const result = h("p", { class: "summary", role: "status" });
    const propose = h("button", { type: "button", class: "propose", text: s.action.label || s.action.tool });
    const confirm = h("button", { type: "button", class: "primary confirm", text: "Confirm", hidden: true });
    const cancel = h("button", { type: "button", class: "cancel", text: "Not now", hidden: true });
    propose.addEventListener("click", async () => {
      propose.disabled = true; notice("");
      try {
        const r = await api("POST", actionUrl(), { suggestion_id: s.id, confirm: false });
        result.textContent = r.summary || r.text || "";
        if (r.outcome === "proposed") { confirm.hidden = false; cancel.hidden = false; confirm.focus(); } else propose.disabled = false;
      } catch (err) { fail(err); propose.disabled = false; }
    });
    confirm.addEventListener("click", async () => {
      confirm.disabled = cancel.disabled = true;
      try {
        const r = await api("POST", actionUrl(), { suggestion_id: s.id, confirm: true });
        result.textContent = r.text || r.outcome;
        box.classList.add(r.done ? "done" : "refused");
        confirm.hidden = cancel.hidden = true;
        $("#reply").focus();
      } catch (err) { fail(err); confirm.disabled = cancel.disabled = false; }
    });
    cancel.addEventListener("click", () => { result.textContent = ""; confirm.hidden = cancel.hidden = true; propose.disabled = false; propose.focus(); });
    box.append(h("span", { class: "muted small", text: "Proposed action: " }), propose, confirm, cancel, result);
    return box;
  }

  function actionUrl() { return "/api/agent/conversations/" + encodeURIComponent(current.id) + "/actions"; }

  // ---- commands ---------------------------------------------------------------------------------
  async function sendReply(text, suggestionId, button) {
    text = (text || "").trim();
    if (!text || !current) return;
    if (button) button.disabled = true;
    $("#send").disabled = true; notice("");
    try {
      const body = { text };
      if (suggestionId) body.suggestion_id = suggestionId;
      const r = await api("POST", "/api/agent/conversations/" + encodeURIComponent(current.id) + "/messages", body);
      $("#reply").value = ""; fromSuggestion = null; $("#reply-from").textContent = "";
      // The socket shows it too (dedup by id); show it now in case the socket is reconnecting.
      appendLive(messageNode({ id: r.id, role: "agent", text, agent: me.name, created_at: new Date().toISOString() }), r.id);
      markSent(suggestionId);
      $("#reply").focus();
    } catch (err) { fail(err); if (button) button.disabled = false; } finally { $("#send").disabled = !mine(); }
  }

  async function command(path, body, button) {
    if (!current) return;
    notice("");
    if (button) button.disabled = true;
    try {
      await api("POST", "/api/agent/conversations/" + encodeURIComponent(current.id) + "/" + path, body);
      await loadConversation();
      await loadQueue();
      if (path === "take-over") $("#reply").focus();
    } catch (err) { fail(err); await loadConversation(); }
  }

  function showCloseForm() {
    $("#close-form").hidden = false; $("#btn-close").setAttribute("aria-expanded", "true");
    $("#close-tags").value = (current.tags || []).join(", ");
    $("#close-tags").focus();
  }
  function hideCloseForm() { $("#close-form").hidden = true; $("#btn-close").setAttribute("aria-expanded", "false"); }

  // ---- the live socket --------------------------------------------------------------------------
  function setConn(state, text) { const el = $("#conn"); el.dataset.state = state; el.textContent = text; }

  function send(frame) { if (ws && ws.readyState === 1) { ws.send(JSON.stringify(frame)); return true; } return false; }

  function connect() {
    if (stopped || !token) return;
    clearTimeout(retryTimer);
    const sock = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws/agent?token=" + encodeURIComponent(token));
    ws = sock;
    setConn("connecting", attempt ? "Reconnecting…" : "Connecting…");
    sock.onmessage = (m) => { if (sock !== ws) return; let e; try { e = JSON.parse(m.data); } catch { return; } onEvent(e); };
    sock.onclose = (e) => {
      if (sock !== ws) return;
      ws = null; clearInterval(pingTimer);
      if (e.code === 4403) { signOut("This console is for support staff: please sign in again."); return; }
      if (stopped) return;
      attempt += 1;
      const delay = Math.min(30000, 500 * 2 ** Math.min(attempt - 1, 6)) * (0.75 + Math.random() * 0.5);
      setConn("offline", "Offline: reconnecting in " + Math.ceil(delay / 1000) + " s");
      retryTimer = setTimeout(connect, delay);
    };
  }

  async function onEvent(e) {
    switch (e.type) {
      case "ready": {
        const again = attempt > 0;
        attempt = 0;
        setConn("online", "Live");
        clearInterval(pingTimer);
        pingTimer = setInterval(() => send({ type: "ping" }), PING_MS);
        if (current) send({ type: "watch", conversation_id: current.id });
        if (again) { await loadQueue(); await loadConversation(); } // what happened while we were away
        break;
      }
      case "queue_changed": await loadQueue(); if (current && e.conversation_id === current.id) await loadConversation(); break;
      case "resync": await loadQueue(); await loadConversation(); break;
      default: if (current && e.conversation_id === current.id) onConversationEvent(e);
    }
  }

  function onConversationEvent(e) {
    if (loading) { held.push(e); return; }
    switch (e.type) {
      case "shopper_message":
        appendLive(messageNode({ ...e.message, role: "user", created_at: new Date().toISOString() }), e.message.id);
        $("#suggestions").replaceChildren(); $("#suggest").hidden = true; // they answered the previous message
        bumpQueue(e.message.text);
        break;
      case "bot_message": {
        const m = e.message;
        if (seen.has(m.id)) break;
        for (const t of m.tools || []) appendLive(toolNode(t));
        appendLive(messageNode({ ...m, role: "assistant", created_at: new Date().toISOString() }), m.id);
        bumpQueue(m.text);
        break;
      }
      case "agent_message":
        appendLive(messageNode({ id: e.id, role: "agent", text: e.text, agent: e.agent, cards: e.card ? [e.card] : [], created_at: e.created_at || new Date().toISOString() }), e.id);
        break;
      case "handoff":
        // The state-change line and the header come with the reload that `queue_changed` triggers.
        if (e.text) appendLive(messageNode({ id: e.id, role: "system", text: e.text, created_at: new Date().toISOString() }), e.id);
        break;
      case "suggestion_delta": {
        const d = $("#draft");
        if (d.hidden) { d.hidden = false; d.textContent = ""; d.dataset.messageId = e.message_id; }
        d.textContent += e.text || "";
        $("#suggest").hidden = false;
        break;
      }
      case "suggestions": renderSuggestions(e.suggestions); break;
      default: break; // watching, pong, error
    }
  }

  function bumpQueue(text) {
    const li = current && document.querySelector(`#queue li[data-id="${CSS.escape(current.id)}"] .last`);
    if (li) li.textContent = String(text || "").slice(0, 160);
  }

  // ---- wiring -----------------------------------------------------------------------------------
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", () => signOut(""));
  $("#show-bot").addEventListener("change", loadQueue);
  $("#btn-take").addEventListener("click", (ev) => command("take-over", undefined, ev.currentTarget));
  $("#btn-release").addEventListener("click", (ev) => command("release", undefined, ev.currentTarget));
  $("#btn-handback").addEventListener("click", (ev) => command("hand-back", undefined, ev.currentTarget));
  $("#btn-close").addEventListener("click", () => ($("#close-form").hidden ? showCloseForm() : hideCloseForm()));
  $("#close-cancel").addEventListener("click", () => { hideCloseForm(); $("#btn-close").focus(); });
  $("#close-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const tags = $("#close-tags").value.split(",").map((t) => t.trim()).filter(Boolean);
    const note = $("#close-note").value.trim() || null;
    await command("close", { tags, note });
    $("#close-note").value = "";
  });
  $("#close-form").addEventListener("keydown", (ev) => { if (ev.key === "Escape") { hideCloseForm(); $("#btn-close").focus(); } });
  $("#reply-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("#reply").value;
    sendReply(text, fromSuggestion ? fromSuggestion.id : null);
  });
  $("#reply").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); $("#reply-form").requestSubmit(); }
  });
  $("#reply").addEventListener("input", () => {
    // Cleared: what is written next is the agent's own, not an edit of the suggestion.
    if (!$("#reply").value.trim()) { fromSuggestion = null; $("#reply-from").textContent = ""; }
  });

  if (token) start(); else $("#login-user").focus();
})();
