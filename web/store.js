/* The demo storefront around the widget: product grid, product pages, a cart, "sign in as".
 * Loaded in <head> before the widget tag so `?lang=zh` can set the page language the widget follows. */
(function () {
  "use strict";
  const params = new URLSearchParams(location.search);
  if (params.get("lang")) document.documentElement.lang = params.get("lang");

  const $ = (id) => document.getElementById(id);
  function h(tag, attrs, children) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") n.textContent = String(v);
      else if (k === "class") n.className = v;
      else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
      else n.setAttribute(k, String(v));
    }
    for (const c of [].concat(children || [])) if (c !== null && c !== undefined) n.append(c);
    return n;
  }
  const money = (v) => `$${Number(v).toFixed(2)}`;
  const range = (p) => (p.price_min === p.price_max ? money(p.price_min) : `${money(p.price_min)} – ${money(p.price_max)}`);
  const options = (o) => Object.entries(o || {}).map(([k, v]) => `${k}: ${v}`).join(", ");

  // ---- cart (localStorage) -------------------------------------------------------------------
  const cart = {
    items() { try { return JSON.parse(localStorage.getItem("demo:cart")) || []; } catch { return []; } },
    save(items) { localStorage.setItem("demo:cart", JSON.stringify(items)); $("cart-count").textContent = items.reduce((s, i) => s + i.qty, 0); },
    add(item) { const items = cart.items(); const have = items.find((i) => i.variant_id === item.variant_id); if (have) have.qty += 1; else items.push({ ...item, qty: 1 }); cart.save(items); },
    remove(variantId) { cart.save(cart.items().filter((i) => i.variant_id !== variantId)); },
  };

  // ---- views ---------------------------------------------------------------------------------
  async function grid(main) {
    const res = await fetch("/api/products?limit=200");
    const { products } = await res.json();
    main.replaceChildren(h("h1", { text: "Products" }), h("ul", { class: "grid" }, products.map((p) => h("li", { class: "product", "data-product": p.id }, [
      h("h2", {}, h("a", { href: `#/product/${encodeURIComponent(p.id)}`, text: p.name })),
      h("div", { class: "price", text: range(p) }),
      h("div", { class: `stock ${p.available ? "in" : "out"}`, text: p.available ? `In stock (${p.available_variants} of ${p.variants} options)` : "Out of stock" }),
    ]))));
  }

  async function product(main, id) {
    const res = await fetch(`/api/products/${encodeURIComponent(id)}`);
    if (!res.ok) { main.replaceChildren(h("h1", { text: "Product not found" }), h("a", { href: "#/", text: "Back to products" })); return; }
    const p = await res.json();
    main.replaceChildren(
      h("p", {}, h("a", { href: "#/", text: "← All products" })),
      h("h1", { text: p.name }),
      p.description ? h("p", { text: p.description }) : "",
      h("p", { class: "price", text: range(p) }),
      h("table", {}, [
        h("thead", {}, h("tr", {}, ["Options", "Price", "Availability", ""].map((t) => h("th", { text: t })))),
        h("tbody", {}, p.variants.map((v) => h("tr", {}, [
          h("td", { text: options(v.options) || v.id }),
          h("td", { text: money(v.price) }),
          h("td", { class: `stock ${v.available ? "in" : "out"}`, text: v.available ? "In stock" : "Out of stock" }),
          h("td", {}, h("button", { type: "button", disabled: !v.available, "aria-label": `Add ${p.name} (${options(v.options)}) to cart`, text: "Add to cart",
            onclick: (e) => { cart.add({ variant_id: v.id, product_id: p.id, name: p.name, options: v.options, price: v.price }); e.target.textContent = "Added ✓"; } })),
        ]))),
      ]),
    );
  }

  function cartView(main) {
    const items = cart.items();
    const total = items.reduce((s, i) => s + i.qty * i.price, 0);
    main.replaceChildren(h("h1", { text: "Cart" }), items.length ? h("table", {}, [
      h("thead", {}, h("tr", {}, ["Item", "Qty", "Price", ""].map((t) => h("th", { text: t })))),
      h("tbody", {}, items.map((i) => h("tr", {}, [
        h("td", { text: `${i.name} (${options(i.options)})` }), h("td", { text: i.qty }), h("td", { text: money(i.qty * i.price) }),
        h("td", {}, h("button", { type: "button", class: "link", text: "Remove", onclick: () => { cart.remove(i.variant_id); cartView(main); } })),
      ]))),
      h("tfoot", {}, h("tr", {}, [h("th", { text: "Total" }), h("td"), h("th", { text: money(total) }), h("td")])),
    ]) : h("p", { text: "Your cart is empty." }));
  }

  async function route() {
    const main = $("content");
    const [, view, arg] = location.hash.replace(/^#/, "").split("/");
    if (view === "product" && arg) await product(main, decodeURIComponent(arg));
    else if (view === "cart") cartView(main);
    else await grid(main);
  }

  // ---- sign in as a demo customer (the token comes from POST /api/session) --------------------
  async function signIn(customerId) {
    sessionStorage.setItem("demo:customer", customerId || "");
    const select = $("signin");
    if (customerId && ![...select.options].some((o) => o.value === customerId)) select.append(h("option", { value: customerId, text: customerId }));
    select.value = customerId || "";
    if (!window.ShopDesk || !window.ShopDesk.widget) return;
    if (!customerId) { window.ShopDesk.widget.setToken(null); return; }
    const res = await fetch("/api/session", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ customer_id: customerId }) });
    if (!res.ok) return;
    const session = await res.json();
    window.ShopDesk.widget.setToken(session.token);
  }

  async function customers() {
    const select = $("signin");
    const res = await fetch("/api/demo/customers?limit=50");
    if (res.ok) {
      for (const c of (await res.json()).customers) {
        const pending = c.orders.filter((o) => o.status === "pending").map((o) => o.id);
        select.append(h("option", { value: c.id, text: `${c.name} (${c.orders.length} orders${pending.length ? ", pending " + pending.join(" ") : ""})` }));
      }
    }
    const current = sessionStorage.getItem("demo:customer");
    if (current && ![...select.options].some((o) => o.value === current)) select.append(h("option", { value: current, text: current }));
    select.value = current || "";
    select.addEventListener("change", () => signIn(select.value));
  }

  window.shopdeskDemo = { signIn };
  document.addEventListener("DOMContentLoaded", () => {
    cart.save(cart.items());
    customers();
    route();
    window.addEventListener("hashchange", () => { route().then(() => $("content").focus()); });
  });
})();
