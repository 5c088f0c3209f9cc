/* shopdesk chat widget: one <script> tag on any store page. Plain JS, no build step.
 *
 *   <script src="https://HOST/static/widget.js" data-server="https://HOST" data-lang="en"
 *           data-primary="#0b5cad" data-token="(optional: a customer token issued by the host site)"></script>
 *
 * or  ShopDesk.init({server, lang, token, primary, primaryText, open})  (with data-manual on the tag).
 * Protocol: docs/protocol.md. Safety: nothing from the model, an agent or the shopper is ever parsed as
 * HTML; text is put into the page with DOM nodes and textContent only, links only http(s) or relative.
 */
(function () {
  "use strict";

  const STRINGS = {
    en: {
      launcher: "Chat with us", title: "Customer service", close: "Close chat", send: "Send",
      placeholder: "Type your message…", inputLabel: "Message", connecting: "Connecting…",
      online: "Online", offline: "Offline: messages will be sent when the connection is back",
      reconnecting: "Reconnecting…", typing: "The assistant is typing", you: "You", bot: "Assistant",
      agent: "Agent", queued: "Waiting to send", confirm: "Confirm", cancel: "Cancel",
      confirmed: "Confirmed", declined: "Cancelled", waiting: "Waiting for an agent…",
      agentJoined: "{name} joined the conversation", helpful: "Helpful", notHelpful: "Not helpful",
      sources: "Sources", endChat: "End chat", rateTitle: "How was this conversation?",
      rateStar: "{n} out of 5", comment: "Comment (optional)", submitRating: "Send rating",
      thanks: "Thank you for your feedback!", updated: "Corrected answer", error: "Error",
      total: "Total", tracking: "Tracking", delivered: "Delivered", estimated: "Estimated delivery",
      orders: "Your orders", recommended: "Suggestions", restock: "Back in stock",
      sessionExpired: "Your session expired; please reload the page.", interrupted:
        "The connection dropped before the answer finished; please ask again.",
      history: "Conversation", newMessages: "New message",
    },
    zh: {
      launcher: "在线客服", title: "客户服务", close: "关闭聊天", send: "发送",
      placeholder: "请输入消息…", inputLabel: "消息", connecting: "正在连接…",
      online: "在线", offline: "离线：网络恢复后将自动发送消息",
      reconnecting: "正在重新连接…", typing: "客服助手正在输入", you: "您", bot: "助手",
      agent: "人工客服", queued: "等待发送", confirm: "确认", cancel: "取消",
      confirmed: "已确认", declined: "已取消", waiting: "正在等待人工客服…",
      agentJoined: "{name} 已加入对话", helpful: "有帮助", notHelpful: "没有帮助",
      sources: "来源", endChat: "结束对话", rateTitle: "您对本次服务满意吗？",
      rateStar: "{n} 分（满分 5 分）", comment: "留言（可选）", submitRating: "提交评价",
      thanks: "感谢您的反馈！", updated: "已更正的回答", error: "错误",
      total: "合计", tracking: "物流单号", delivered: "已送达", estimated: "预计送达",
      orders: "您的订单", recommended: "推荐", restock: "到货通知",
      sessionExpired: "会话已过期，请刷新页面。", interrupted: "回答尚未完成时连接中断，请再问一次。",
      history: "对话记录", newMessages: "新消息",
    },
  };

  // ---- DOM helpers: every string goes in as a text node ------------------------------------------
  function h(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = String(v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of [].concat(children || [])) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return node;
  }

  /** A link target we allow: http(s) absolute, or relative (no scheme, not protocol-relative). */
  function safeHref(url) {
    const u = String(url || "").trim();
    if (/^https?:\/\//i.test(u)) return u;
    if (/^[a-z][a-z0-9+.-]*:/i.test(u) || u.startsWith("//") || /[\u0000-\u001f\\]/.test(u)) return null;
    return u || null;
  }

  const INLINE = /\*\*([^*\n]+)\*\*|`([^`\n]+)`|\[([^\]\n]+)\]\(([^)\s]+)\)|(https?:\/\/[^\s<>()"']+[^\s<>()"'.,;:!?])|\*([^*\s][^*\n]*)\*/g;

  function inline(text, parent) {
    let last = 0;
    INLINE.lastIndex = 0;
    for (let m; (m = INLINE.exec(text)); ) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      if (m[1] !== undefined) parent.appendChild(h("strong", { text: m[1] }));
      else if (m[2] !== undefined) parent.appendChild(h("code", { text: m[2] }));
      else if (m[3] !== undefined) {
        const href = safeHref(m[4]);
        parent.appendChild(href ? h("a", { href, target: "_blank", rel: "noopener noreferrer nofollow", text: m[3] })
          : document.createTextNode(m[3]));
      } else if (m[5] !== undefined) {
        parent.appendChild(h("a", { href: m[5], target: "_blank", rel: "noopener noreferrer nofollow", text: m[5] }));
      } else parent.appendChild(h("em", { text: m[6] }));
      last = INLINE.lastIndex;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  /** Safe Markdown: paragraphs, bullet / numbered lists, headings (as bold), bold, italics, code, links. */
  function renderMarkdown(text, target) {
    target.textContent = "";
    const blocks = String(text || "").replace(/\r\n?/g, "\n").split(/\n\s*\n/);
    for (const block of blocks) {
      const lines = block.split("\n").filter((l) => l.trim() !== "");
      if (!lines.length) continue;
      const bullet = /^\s*([-*•]|\d+[.)])\s+/;
      if (lines.every((l) => bullet.test(l))) {
        const list = h(/^\s*\d/.test(lines[0]) ? "ol" : "ul");
        for (const l of lines) { const li = h("li"); inline(l.replace(bullet, ""), li); list.appendChild(li); }
        target.appendChild(list);
        continue;
      }
      const p = h("p");
      lines.forEach((l, i) => {
        const heading = /^#{1,6}\s+(.*)$/.exec(l.trim());
        if (i) p.appendChild(h("br"));
        if (heading) { const s = h("strong"); inline(heading[1], s); p.appendChild(s); } else inline(l, p);
      });
      target.appendChild(p);
    }
  }

  function money(v) { return typeof v === "number" ? `$${v.toFixed(2)}` : String(v ?? ""); }
  function optionsText(o) {
    if (!o || typeof o !== "object") return o ? String(o) : "";
    return Object.entries(o).map(([k, v]) => `${k}: ${v}`).join(", ");
  }
  function dateText(v) { return v ? String(v).slice(0, 10) : ""; }

  function uid() {
    if (window.crypto && crypto.randomUUID) return "c-" + crypto.randomUUID();
    return "c-" + Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
  }

  // ---- the widget --------------------------------------------------------------------------------
  class Widget {
    constructor(opts) {
      const script = opts.script;
      this.server = (opts.server || (script && new URL(script.src, location.href).origin) || location.origin).replace(/\/$/, "");
      this.lang = STRINGS[opts.lang] ? opts.lang : "en";
      this.t = STRINGS[this.lang];
      this.storageKey = opts.storageKey || "shopdesk:" + this.server;
      this.storage = opts.storage === "local" ? window.localStorage : window.sessionStorage;
      this.theme = { primary: opts.primary, primaryText: opts.primaryText };
      this.hostToken = opts.token || null;
      this.seen = new Set(); // message ids on screen
      this.byClientId = new Map(); // client id -> the shopper's bubble
      this.lastId = 0;
      this.turn = null; // the bot reply being streamed
      this.ws = null;
      this.attempt = 0;
      this.synced = false;
      this.closedByUs = false;
      this.state = this._load();
      if (this.hostToken && this.state.token !== this.hostToken) this.state = { token: this.hostToken, outbox: [] };
      this._build();
      if (opts.open || this.state.open) this.open(false);
      if (this.state.token) this.connect();
    }

    // -- persistence
    _load() {
      try { return JSON.parse(this.storage.getItem(this.storageKey)) || { outbox: [] }; } catch { return { outbox: [] }; }
    }
    _save() { try { this.storage.setItem(this.storageKey, JSON.stringify(this.state)); } catch { /* private mode */ } }

    // -- layout
    _build() {
      const t = this.t;
      this.root = h("div", { class: "sd-widget", lang: this.lang === "zh" ? "zh-CN" : "en" });
      if (this.theme.primary) this.root.style.setProperty("--sd-primary", this.theme.primary);
      if (this.theme.primaryText) this.root.style.setProperty("--sd-primary-text", this.theme.primaryText);
      this.launcher = h("button", { type: "button", class: "sd-launcher", "aria-expanded": "false", "aria-controls": "sd-panel",
        onclick: () => this.open(true) }, [h("span", { "aria-hidden": "true", text: "💬 " }), t.launcher]);
      this.statusEl = h("p", { class: "sd-status", role: "status", text: "" });
      this.banner = h("p", { class: "sd-banner", hidden: true });
      this.log = h("ol", { class: "sd-log", "aria-live": "polite", "aria-relevant": "additions", "aria-label": t.history, tabindex: "0" });
      this.input = h("textarea", { class: "sd-input", rows: "1", maxlength: "4000", placeholder: t.placeholder, "aria-label": t.inputLabel });
      this.input.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); this._submit(); }
      });
      this.form = h("form", { class: "sd-composer", onsubmit: (e) => { e.preventDefault(); this._submit(); } },
        [this.input, h("button", { type: "submit", class: "sd-send", text: t.send })]);
      this.endBtn = h("button", { type: "button", class: "sd-end", text: t.endChat, onclick: () => this._showRating() });
      this.panel = h("section", { id: "sd-panel", class: "sd-panel", role: "dialog", "aria-modal": "false", "aria-label": t.title, hidden: true }, [
        h("header", { class: "sd-head" }, [
          h("h2", { text: t.title }),
          this.endBtn,
          h("button", { type: "button", class: "sd-close", "aria-label": t.close, text: "×", onclick: () => this.close() }),
        ]),
        this.banner, this.log, this.statusEl, this.form,
      ]);
      this.panel.addEventListener("keydown", (e) => { if (e.key === "Escape") this.close(); });
      this.root.append(this.launcher, this.panel);
      (document.body || document.documentElement).appendChild(this.root);
      this._status(this.state.token ? t.connecting : "");
    }

    open(focus) {
      this.panel.hidden = false;
      this.launcher.hidden = true;
      this.launcher.setAttribute("aria-expanded", "true");
      this.state.open = true; this._save();
      if (!this.state.token) this._newGuestSession();
      if (focus) this.input.focus();
      this._scroll();
    }

    close() {
      this.panel.hidden = true;
      this.launcher.hidden = false;
      this.launcher.setAttribute("aria-expanded", "false");
      this.state.open = false; this._save();
      this.launcher.focus();
    }

    /** Switch identity (e.g. the host site signed the shopper in): a new conversation on a new token. */
    setToken(token) {
      this._disconnect();
      this.state = { token, outbox: [], open: this.state.open };
      this._save();
      this._reset();
      if (token) this.connect(); else if (!this.panel.hidden) this._newGuestSession();
    }

    _reset() {
      this.log.textContent = "";
      this.seen.clear(); this.byClientId.clear();
      this.lastId = 0; this.turn = null; this.synced = false;
      this.banner.hidden = true;
    }

    async _newGuestSession() {
      if (this._creating) return;
      this._creating = true;
      try {
        const res = await fetch(this.server + "/api/session", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
        if (!res.ok) throw new Error("session " + res.status);
        const body = await res.json();
        this.state.token = body.token; this._save();
        this.connect();
      } catch {
        this._status(this.t.offline);
        setTimeout(() => { this._creating = false; if (!this.state.token) this._newGuestSession(); }, 3000);
        return;
      }
      this._creating = false;
    }

    // -- connection
    connect() {
      this._disconnect();
      this.closedByUs = false;
      const url = this.server.replace(/^http/, "ws") + "/ws/chat?token=" + encodeURIComponent(this.state.token);
      const ws = new WebSocket(url);
      this.ws = ws;
      this.synced = false;
      this._status(this.attempt ? this.t.reconnecting : this.t.connecting);
      ws.onmessage = (m) => { if (ws === this.ws) { let e; try { e = JSON.parse(m.data); } catch { return; } this._onEvent(e); } };
      ws.onclose = (e) => { if (ws === this.ws) this._onClose(e); };
    }

    _disconnect() {
      clearTimeout(this._retry);
      clearInterval(this._ping);
      if (this.ws) { const ws = this.ws; this.ws = null; this.closedByUs = true; try { ws.close(); } catch { /* closed */ } }
    }

    _onClose(e) {
      this.ws = null; this.synced = false;
      clearInterval(this._ping);
      this._dropUnfinishedTurn();
      this._typing(false);
      if (e.code === 4401 || e.code === 4404) {
        if (this.hostToken) { this._status(this.t.sessionExpired); return; }
        this.state.token = null; this._save(); // a guest starts over
        if (!this.panel.hidden) this._newGuestSession();
        return;
      }
      this.attempt += 1;
      const delay = Math.min(30000, 500 * 2 ** Math.min(this.attempt - 1, 6)) * (0.75 + Math.random() * 0.5);
      this._status(this.t.offline);
      this._retry = setTimeout(() => this.connect(), delay);
    }

    /** A reply cut by a drop: drop its partial draft and cards; the stored reply comes back from history. */
    _dropUnfinishedTurn() {
      if (this.turn && !this.turn.done) this.turn.li.remove();
      this.turn = null;
      // The reply to this message may still be finished and stored by the server: look for it after the reconnect.
      if (this.awaiting) { this.state.awaitReply = this.awaiting; this.awaiting = null; this._save(); }
    }

    /** Poll the history for the reply to a message whose turn a drop interrupted (bounded; then say so). */
    async _pollReply(tries = 0) {
      const after = this.state.awaitReply;
      if (!after || !this.synced) return;
      try {
        const res = await fetch(`${this.server}/api/conversation/messages?after_id=${after}`,
          { headers: { Authorization: "Bearer " + this.state.token } });
        if (res.ok) {
          const { messages } = await res.json();
          for (const m of messages) this._historyMessage(m);
          // Done when every shopper message since the interrupted one has had a reply (turns may interleave).
          const users = messages.filter((m) => m.role === "user").length;
          if (messages.length - users > users) { this.state.awaitReply = null; this._save(); return; }
        }
      } catch { /* offline again: the next reconnect polls */ return; }
      if (tries >= 40) {
        this.state.awaitReply = null; this._save();
        this._system(this.t.interrupted);
        return;
      }
      clearTimeout(this._poll);
      this._poll = setTimeout(() => this._pollReply(tries + 1), 1500);
    }

    async _sync() {
      const ws = this.ws;
      try {
        const res = await fetch(`${this.server}/api/conversation/messages?after_id=${this.lastId}`,
          { headers: { Authorization: "Bearer " + this.state.token } });
        if (!res.ok) throw new Error("history " + res.status);
        const body = await res.json();
        for (const m of body.messages) this._historyMessage(m);
      } catch {
        if (ws && ws === this.ws) ws.close(); // try again with back-off
        return;
      }
      if (ws !== this.ws) return;
      this.synced = true;
      this._greet();
      this._status(this.t.online);
      // The offline queue: each message once, with its client id (the server ignores a repeat).
      for (const item of this.state.outbox) ws.send(JSON.stringify({ type: "message", text: item.text, id: item.id }));
      this._scroll();
      if (this.state.awaitReply) this._pollReply();
      this._restorePending(ws);
    }

    /** A `confirm` is sent once, live: after a reload the conversation's pending action comes from
     * `GET /api/conversation`, and its buttons are drawn again (under the last bot reply). */
    async _restorePending(ws) {
      if (this.log.querySelector(".sd-confirm:not(.sd-answered)")) return;
      let body;
      try {
        const res = await fetch(`${this.server}/api/conversation`, { headers: { Authorization: "Bearer " + this.state.token } });
        if (!res.ok) return;
        body = await res.json();
      } catch { return; }
      const p = body.pending_action;
      if (!p || ws !== this.ws || this.turn || this.log.querySelector(".sd-confirm:not(.sd-answered)")) return;
      const bots = this.log.querySelectorAll(":scope > .sd-bot[data-id]");
      const last = bots.length ? bots[bots.length - 1] : null;
      const turn = last ? { li: last } : this._newTurn();
      if (!last) { turn.done = true; this.turn = null; }
      this._confirm(turn, p, false);
    }

    /** The store's greeting (prompts/greeting.md, sent in `ready`): shown, not stored, while the chat is empty. */
    _greet() {
      if (!this.greeting || this.log.querySelector(".sd-user, .sd-bot, .sd-agent")) return;
      const bubble = h("div", { class: "sd-bubble" });
      renderMarkdown(this.greeting, bubble);
      this.log.prepend(h("li", { class: "sd-msg sd-bot sd-greeting" }, [h("span", { class: "sd-sr", text: this.t.bot + ": " }), bubble]));
    }

    _historyMessage(m) {
      if (this.seen.has(m.id)) return;
      const placed = this._historyNode(m);
      if (placed) this._place(placed, m.id);
    }

    /** History can hold replies stored after newer live ones (a turn that finished during a drop): keep id order. */
    _place(li, id) {
      li.dataset.id = id;
      const later = [...this.log.querySelectorAll(":scope > .sd-msg[data-id]")].find((n) => n !== li && Number(n.dataset.id) > id);
      if (later && li.nextElementSibling !== later) this.log.insertBefore(li, later);
    }

    _historyNode(m) {
      this.lastId = Math.max(this.lastId, m.id);
      if (m.role === "user") {
        const mine = m.client_id && this.byClientId.get(m.client_id);
        if (mine) { this._acked(mine, m.id, m.client_id); return null; }
        return this._userBubble(m.text, { id: m.id });
      }
      this.seen.add(m.id);
      if (m.role === "assistant") {
        const live = this.turn;
        const turn = this._newTurn();
        this._finishTurn(turn, { id: m.id, text: m.text, citations: m.citations, replaced: false });
        for (const c of m.cards || []) this._card(turn, c);
        this.turn = live && !live.done ? live : null; // a reply streaming right now goes on
        return turn.li;
      }
      if (m.role === "agent") return this._agentMessage(m.text, m.agent, m.cards || []);
      return this._system(m.text);
    }

    // -- events
    _onEvent(e) {
      const t = this.t;
      switch (e.type) {
        case "ready":
          this.attempt = 0;
          this.greeting = e.greeting || null;
          this._handoffState(e.state, { agent: e.agent });
          this._ping = setInterval(() => { if (this.ws && this.ws.readyState === 1) this.ws.send('{"type":"ping"}'); }, 25000);
          this._sync();
          break;
        case "ack": {
          const li = this.byClientId.get(e.client_id);
          this.awaiting = e.message_id || null;
          if (li) this._acked(li, e.message_id, e.client_id);
          else if (e.message_id && !this.seen.has(e.message_id)) this.lastId = Math.max(this.lastId, e.message_id);
          this._typing(true);
          break;
        }
        case "token": {
          const turn = this.turn || this._newTurn();
          turn.draft += e.text || "";
          turn.bubble.textContent = turn.draft; // plain text while streaming; Markdown when final
          this._typing(false);
          this._scroll();
          break;
        }
        case "card": this._card(this.turn || this._newTurn(), e.card || {}); break;
        case "confirm": this._confirm(this.turn || this._newTurn(), e); break;
        case "handoff": this._handoffState(e.state, e); break;
        case "agent_message": {
          this._typing(false);
          if (e.id && this.seen.has(e.id)) break; // already shown (history after a reconnect, or a repeat)
          const li = this._agentMessage(e.text, e.agent || e.name, e.card ? [e.card] : []);
          if (e.id) { li.dataset.id = e.id; this.seen.add(e.id); this.lastId = Math.max(this.lastId, e.id); }
          break;
        }
        case "message": {
          this._typing(false);
          if (e.id && this.seen.has(e.id)) { if (this.turn && !this.turn.done) this.turn.li.remove(); this.turn = null; break; }
          const turn = this.turn || this._newTurn();
          this._finishTurn(turn, e);
          break;
        }
        case "error":
          this._typing(false);
          if (e.code === "rate_limited" && e.client_id) {
            setTimeout(() => { const item = this.state.outbox.find((o) => o.id === e.client_id); if (item && this.ws && this.synced) this.ws.send(JSON.stringify({ type: "message", text: item.text, id: item.id })); }, 2000);
          }
          this._system(e.message || t.error, "sd-error");
          break;
        case "done":
          this._typing(false);
          if (e.duplicate && e.client_id) {
            const li = this.byClientId.get(e.client_id);
            this._dropFromOutbox(e.client_id);
            if (li) li.classList.remove("sd-pending");
          }
          if (this.turn) { this.turn.done = true; this.turn = null; }
          this.awaiting = null;
          break;
        default: break; // ready / pong / future events
      }
    }

    _acked(li, id, clientId) {
      li.dataset.id = id;
      li.classList.remove("sd-pending");
      const q = li.querySelector(".sd-queued");
      if (q) q.remove();
      this.seen.add(id);
      this.lastId = Math.max(this.lastId, id);
      this._dropFromOutbox(clientId);
    }

    _dropFromOutbox(clientId) {
      const before = this.state.outbox.length;
      this.state.outbox = this.state.outbox.filter((o) => o.id !== clientId);
      if (this.state.outbox.length !== before) this._save();
    }

    // -- sending
    _submit() {
      const text = this.input.value.trim();
      if (!text) return;
      if (!this.state.token) this._newGuestSession();
      const item = { id: uid(), text: text.slice(0, 4000) };
      // A typed message answers (or moves past) a pending confirm: its buttons no longer apply.
      for (const box of this.log.querySelectorAll(".sd-confirm:not(.sd-answered)")) {
        box.classList.add("sd-answered");
        for (const b of box.querySelectorAll("button")) b.disabled = true;
      }
      this.state.outbox.push(item); this._save();
      this._userBubble(item.text, { clientId: item.id, pending: true });
      this.input.value = "";
      if (this.ws && this.ws.readyState === 1 && this.synced) {
        this.ws.send(JSON.stringify({ type: "message", text: item.text, id: item.id }));
        this._typing(true);
      }
      this.input.focus();
    }

    _send(frame) {
      if (this.ws && this.ws.readyState === 1) { this.ws.send(JSON.stringify(frame)); return true; }
      return false;
    }

    // -- rendering
    _append(li) {
      const typing = this.log.querySelector(".sd-typing");
      this.log.insertBefore(li, typing || null);
      this._scroll();
      return li;
    }

    _scroll() { this.log.scrollTop = this.log.scrollHeight; }

    _status(text) { this.statusEl.textContent = text; this.root.dataset.status = text === this.t.online ? "online" : text === this.t.offline ? "offline" : "connecting"; }

    _userBubble(text, { id, clientId, pending } = {}) {
      const li = h("li", { class: "sd-msg sd-user" + (pending ? " sd-pending" : "") }, [
        h("span", { class: "sd-sr", text: this.t.you + ": " }),
        h("div", { class: "sd-bubble", text }),
        pending ? h("span", { class: "sd-queued", text: this.t.queued }) : null,
      ]);
      if (id) { li.dataset.id = id; this.seen.add(id); this.lastId = Math.max(this.lastId, id); }
      if (clientId) { li.dataset.clientId = clientId; this.byClientId.set(clientId, li); }
      return this._append(li);
    }

    _newTurn() {
      const bubble = h("div", { class: "sd-bubble" });
      const li = h("li", { class: "sd-msg sd-bot" }, [h("span", { class: "sd-sr", text: this.t.bot + ": " }), bubble]);
      this.turn = { li, bubble, draft: "", done: false };
      this._append(li);
      return this.turn;
    }

    _finishTurn(turn, e) {
      turn.done = true;
      if (e.id) { turn.li.dataset.id = e.id; this.seen.add(e.id); this.lastId = Math.max(this.lastId, e.id); }
      const text = e.text !== undefined && e.text !== null ? e.text : turn.draft;
      renderMarkdown(text, turn.bubble);
      if (e.replaced) {
        turn.li.classList.add("sd-replaced");
        turn.li.insertBefore(h("span", { class: "sd-note", text: this.t.updated }), turn.bubble);
      }
      const cites = (e.citations || []).map((c) => this._citation(c)).filter(Boolean);
      if (cites.length) {
        turn.li.appendChild(h("div", { class: "sd-cites" }, [h("span", { text: this.t.sources + ": " }), ...cites.flatMap((a, i) => (i ? [", ", a] : [a]))]));
      }
      if (e.id && text) turn.li.appendChild(this._thumbs(e.id));
      if (this.turn === turn) this.turn = null;
      this._scroll();
    }

    _citation(c) {
      const label = c.section || c.title || c.source;
      const m = /^policies\/([a-z0-9-]+)\.md$/.exec(c.source || "");
      if (!label) return null;
      if (!m) return h("span", { class: "sd-cite", text: label });
      const href = `${this.server}/policies/${m[1]}` + (c.anchor ? "#" + encodeURIComponent(c.anchor) : "");
      return h("a", { class: "sd-cite", href, target: "_blank", rel: "noopener", text: label });
    }

    _thumbs(id) {
      const t = this.t;
      const group = h("div", { class: "sd-thumbs", role: "group", "aria-label": t.helpful + " / " + t.notHelpful });
      const vote = async (v, btn) => {
        for (const b of group.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b === btn));
        try {
          await fetch(this.server + "/api/conversation/feedback", {
            method: "POST", headers: { "Content-Type": "application/json", Authorization: "Bearer " + this.state.token },
            body: JSON.stringify({ message_id: Number(id), vote: v }),
          });
        } catch { /* best effort */ }
      };
      const up = h("button", { type: "button", class: "sd-up", "aria-pressed": "false", "aria-label": t.helpful, title: t.helpful, text: "👍" });
      const down = h("button", { type: "button", class: "sd-down", "aria-pressed": "false", "aria-label": t.notHelpful, title: t.notHelpful, text: "👎" });
      up.addEventListener("click", () => vote("up", up));
      down.addEventListener("click", () => vote("down", down));
      group.append(up, down);
      return group;
    }

    _card(turn, card) {
      const t = this.t;
      let node;
      if (card.kind === "order") {
        node = h("div", { class: "sd-card sd-card-order" }, [
          h("div", { class: "sd-card-head" }, [h("strong", { text: card.id }), h("span", { class: "sd-badge sd-" + String(card.status || "").replace(/\W/g, ""), text: card.status })]),
          card.created_at ? h("div", { class: "sd-muted", text: dateText(card.created_at) }) : null,
          h("ul", {}, (card.items || []).map((i) => h("li", { text: [i.name, optionsText(i.options), i.price !== undefined ? money(i.price) : ""].filter(Boolean).join(" · ") }))),
          card.total !== undefined ? h("div", { class: "sd-total", text: `${t.total}: ${money(card.total)}` }) : null,
          ...(card.shipments || []).map((s) => h("div", { class: "sd-ship" }, [
            `${s.carrier || ""} · ${t.tracking} ${s.tracking_id || ""}` +
              (s.delivered_at ? ` · ${t.delivered} ${dateText(s.delivered_at)}` : s.estimated_delivery ? ` · ${t.estimated} ${dateText(s.estimated_delivery)}` : "") +
              (s.last_event ? ` · ${typeof s.last_event === "object" ? s.last_event.description || s.last_event.status || "" : s.last_event}` : ""),
          ])),
          card.cancel_reason ? h("div", { class: "sd-muted", text: card.cancel_reason }) : null,
        ]);
      } else if (card.kind === "order_list") {
        node = h("div", { class: "sd-card sd-card-orders" }, [h("strong", { text: t.orders }),
          h("ul", {}, (card.orders || []).map((o) => h("li", {}, [h("strong", { text: o.id }), " ", h("span", { class: "sd-badge sd-" + String(o.status || "").replace(/\W/g, ""), text: o.status }), ` ${dateText(o.created_at)} ${o.total !== undefined ? money(o.total) : ""}`])))]);
      } else if (card.kind === "products") {
        node = h("div", { class: "sd-card sd-card-products" }, [h("strong", { text: t.recommended }),
          h("ul", {}, (card.items || []).map((p) => h("li", {}, [h("strong", { text: p.name }), p.price !== undefined ? " " + money(p.price) : "", p.options ? h("div", { class: "sd-muted", text: optionsText(p.options) }) : null, p.reason ? h("div", { class: "sd-muted", text: p.reason }) : null])))]);
      } else if (card.kind === "restock") {
        node = h("div", { class: "sd-card sd-card-restock" }, [h("strong", { text: card.label || t.restock }), card.text ? h("p", { text: card.text }) : null]);
      } else {
        node = h("div", { class: "sd-card sd-card-generic" }, [h("strong", { text: String(card.kind || "info") }),
          h("dl", {}, Object.entries(card).filter(([k]) => k !== "kind").flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: typeof v === "object" ? JSON.stringify(v) : String(v) })]))]);
      }
      turn.li.appendChild(node);
      this._scroll();
    }

    _confirm(turn, e, focus = true) {
      const t = this.t;
      const yes = h("button", { type: "button", class: "sd-yes", text: t.confirm });
      const no = h("button", { type: "button", class: "sd-no", text: t.cancel });
      const box = h("div", { class: "sd-confirm", role: "group", "aria-label": e.summary || t.confirm }, [h("p", { text: e.summary || e.action }), yes, no]);
      const answer = (approve) => {
        if (!this._send({ type: "confirm", approve })) return;
        yes.disabled = no.disabled = true;
        box.classList.add("sd-answered");
        box.appendChild(h("span", { class: "sd-muted", text: " " + (approve ? t.confirmed : t.declined) }));
        this._typing(true);
        this.input.focus();
      };
      yes.addEventListener("click", () => answer(true));
      no.addEventListener("click", () => answer(false));
      turn.li.appendChild(box);
      this._scroll();
      if (focus) yes.focus();
    }

    _handoffState(state, e) {
      const t = this.t;
      this.root.dataset.handoff = state || "bot";
      if (state === "waiting") { this.banner.hidden = false; this.banner.textContent = t.waiting; }
      else if (state === "agent") {
        this.banner.hidden = false;
        this.banner.textContent = t.agentJoined.replace("{name}", (e && (e.agent || e.name)) || t.agent);
      } else this.banner.hidden = true;
      // The shopper-facing line is stored (its id comes with the event): shown once, even after a reconnect.
      if (e && e.text && !(e.id && this.seen.has(e.id))) {
        const li = this._system(e.text);
        if (e.id) { li.dataset.id = e.id; this.seen.add(e.id); this.lastId = Math.max(this.lastId, e.id); }
      }
    }

    _agentMessage(text, name, cards) {
      const li = h("li", { class: "sd-msg sd-agent" }, [h("span", { class: "sd-who", text: (name || this.t.agent) + ": " }), h("div", { class: "sd-bubble" })]);
      renderMarkdown(text, li.querySelector(".sd-bubble"));
      this._append(li);
      for (const c of cards || []) this._card({ li }, c); // e.g. the order an agent's action changed
      return li;
    }

    _system(text, cls) { return this._append(h("li", { class: "sd-msg sd-system " + (cls || ""), text })); }

    _typing(on) {
      const el = this.log.querySelector(".sd-typing");
      if (on && !el) this.log.appendChild(h("li", { class: "sd-typing", role: "status", "aria-label": this.t.typing }, [h("span"), h("span"), h("span")]));
      else if (!on && el) el.remove();
      this._scroll();
    }

    _showRating() {
      if (this.panel.querySelector(".sd-rating")) { this.panel.querySelector(".sd-rating button").focus(); return; }
      const t = this.t;
      let chosen = 0;
      const stars = [1, 2, 3, 4, 5].map((n) => h("button", { type: "button", class: "sd-star", "aria-pressed": "false", "aria-label": t.rateStar.replace("{n}", n), text: "★",
        onclick: () => { chosen = n; stars.forEach((s, i) => { s.setAttribute("aria-pressed", String(i < n)); }); } }));
      const comment = h("input", { type: "text", maxlength: "1000", "aria-label": t.comment, placeholder: t.comment });
      const box = h("form", { class: "sd-rating", "aria-label": t.rateTitle }, [h("p", { text: t.rateTitle }), h("div", { class: "sd-stars", role: "group", "aria-label": t.rateTitle }, stars), comment,
        h("button", { type: "submit", class: "sd-send", text: t.submitRating })]);
      box.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        if (!chosen) { stars[0].focus(); return; }
        try {
          const res = await fetch(this.server + "/api/conversation/rating", {
            method: "POST", headers: { "Content-Type": "application/json", Authorization: "Bearer " + this.state.token },
            body: JSON.stringify({ rating: chosen, comment: comment.value.trim() || null }),
          });
          if (!res.ok) throw new Error(String(res.status));
        } catch { return; }
        box.replaceWith(h("p", { class: "sd-rating-done", role: "status", tabindex: "-1", text: t.thanks }));
        this.panel.querySelector(".sd-rating-done").focus();
      });
      this.panel.insertBefore(box, this.form);
      stars[0].focus();
    }
  }

  // ---- bootstrap ---------------------------------------------------------------------------------
  const script = document.currentScript;
  function loadCss(server) {
    if (document.querySelector("link[data-shopdesk]")) return;
    document.head.appendChild(h("link", { rel: "stylesheet", href: server + "/static/widget.css", "data-shopdesk": true }));
  }
  const ShopDesk = {
    widget: null,
    strings: STRINGS,
    renderMarkdown,
    init(opts = {}) {
      const o = { script, ...opts };
      if (ShopDesk.widget) return ShopDesk.widget;
      const start = () => {
        const server = (o.server || (script && new URL(script.src, location.href).origin) || location.origin).replace(/\/$/, "");
        if (o.css !== false) loadCss(server);
        ShopDesk.widget = new Widget({ ...o, server });
      };
      if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);
      return ShopDesk.widget;
    },
  };
  window.ShopDesk = ShopDesk;
  if (script && !("manual" in script.dataset)) {
    const d = script.dataset;
    ShopDesk.init({ server: d.server, lang: d.lang || (document.documentElement.lang || "en").slice(0, 2), token: d.token, primary: d.primary, primaryText: d.primaryText, open: "open" in d, storage: d.storage });
  }
})();
