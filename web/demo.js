// Demo page chat box: speaks only the documented protocol (docs/protocol.md).
// Everything from the model or the shopper is inserted as text, never as HTML.
(() => {
  const $ = (id) => document.getElementById(id);
  const log = $("log");
  const status = $("status");
  let ws = null;
  let draft = null; // the assistant bubble being streamed

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function bubble(role, text) {
    const li = el("li", "msg " + role);
    li.appendChild(el("div", "text", text));
    log.appendChild(li);
    li.scrollIntoView({ block: "end" });
    return li;
  }

  function orderCard(card) {
    const box = el("div", "card");
    if (card.kind === "order") {
      box.appendChild(el("strong", "", `Order ${card.id}`));
      box.appendChild(el("span", "badge " + card.status, card.status));
      const items = el("ul");
      for (const item of card.items || []) items.appendChild(el("li", "", `${item.name} — $${Number(item.price).toFixed(2)}`));
      box.appendChild(items);
      for (const s of card.shipments || []) {
        const eta = s.delivered_at ? `delivered ${String(s.delivered_at).slice(0, 10)}` : s.estimated_delivery ? `estimated ${s.estimated_delivery}` : "";
        box.appendChild(el("div", "ship", `${s.carrier} · tracking ${s.tracking_id} · ${String(s.status).replace(/_/g, " ")} ${eta}`));
      }
      if (card.total !== undefined) box.appendChild(el("div", "total", `Total $${Number(card.total).toFixed(2)}`));
    } else if (card.kind === "order_list") {
      box.appendChild(el("strong", "", "Your orders"));
      const list = el("ul");
      for (const o of card.orders) list.appendChild(el("li", "", `${o.id} · ${o.status} · ${o.items} items · $${Number(o.total).toFixed(2)}`));
      box.appendChild(list);
    } else if (card.kind === "products") {
      box.appendChild(el("strong", "", "Suggestions"));
      const list = el("ul");
      for (const p of card.items || []) {
        const opts = Object.entries(p.options || {}).map(([k, v]) => `${k} ${v}`).join(", ");
        list.appendChild(el("li", "", `${p.name}${opts ? " (" + opts + ")" : ""} · $${Number(p.price).toFixed(2)} · ${p.reason}`));
      }
      box.appendChild(list);
    } else if (card.kind === "restock") {
      box.appendChild(el("strong", "", card.label || "Stock"));
      box.appendChild(el("div", "", card.text || ""));
    } else {
      box.textContent = JSON.stringify(card);
    }
    const li = el("li", "msg card-row");
    li.appendChild(box);
    log.appendChild(li);
  }

  function confirmBox(event) {
    const li = el("li", "msg confirm");
    li.appendChild(el("div", "text", event.summary));
    const yes = el("button", "yes", "Confirm");
    const no = el("button", "no", "Keep it");
    const answer = (approve) => {
      yes.disabled = no.disabled = true;
      ws.send(JSON.stringify({ type: "confirm", approve }));
    };
    yes.onclick = () => answer(true);
    no.onclick = () => answer(false);
    li.append(yes, no);
    log.appendChild(li);
  }

  function onEvent(event) {
    switch (event.type) {
      case "ready":
        status.textContent = `Connected (${event.identity}).`;
        break;
      case "token":
        if (!draft) draft = bubble("bot", "");
        draft.querySelector(".text").textContent += event.text;
        break;
      case "message":
        if (!draft) draft = bubble("bot", "");
        draft.querySelector(".text").textContent = event.text; // the checked reply replaces the draft
        if (event.replaced) draft.classList.add("replaced");
        for (const c of event.citations || []) {
          draft.appendChild(el("div", "cite", `Source: ${c.title} › ${c.section}`));
        }
        draft = null;
        break;
      case "card":
        orderCard(event.card);
        break;
      case "confirm":
        confirmBox(event);
        break;
      case "handoff":
        bubble("system", event.text || "Handing you over to a person from our team.");
        break;
      case "error":
        bubble("error", event.message);
        break;
      case "done":
        draft = null;
        break;
    }
  }

  async function loadCustomers() {
    const res = await fetch("/api/demo/customers?limit=20");
    if (!res.ok) return;
    const data = await res.json();
    for (const c of data.customers) {
      const opt = el("option", "", `${c.name} (${c.orders.length} orders)`);
      opt.value = c.id;
      opt.dataset.orders = JSON.stringify(c.orders);
      $("customer").appendChild(opt);
    }
  }

  function showHints() {
    const opt = $("customer").selectedOptions[0];
    const hints = $("hints");
    hints.textContent = "";
    if (!opt || !opt.value) return;
    hints.appendChild(el("h2", "", "Orders of this customer"));
    for (const o of JSON.parse(opt.dataset.orders)) {
      const b = el("button", "hint", `${o.id} (${o.status})`);
      b.type = "button";
      b.onclick = () => { $("text").value = `Where is my order ${o.id}?`; $("text").focus(); };
      hints.appendChild(b);
    }
  }

  async function start() {
    if (ws) ws.close();
    log.textContent = "";
    const customer = $("customer").value || null;
    const res = await fetch("/api/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ customer_id: customer }),
    });
    const session = await res.json();
    const proto = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${proto}://${location.host}/ws/chat?token=${encodeURIComponent(session.token)}`);
    ws.onmessage = (m) => onEvent(JSON.parse(m.data));
    ws.onclose = () => { status.textContent = "Disconnected."; };
    showHints();
  }

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (!text || !ws || ws.readyState !== WebSocket.OPEN) return;
    bubble("user", text);
    ws.send(JSON.stringify({ type: "message", text, id: crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) }));
    $("text").value = "";
  });
  $("start").addEventListener("click", start);
  $("customer").addEventListener("change", start);
  loadCustomers().then(start);
})();
