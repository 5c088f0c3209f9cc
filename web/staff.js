/* Shared by the staff pages (support console, admin): the DOM builder, the REST client that carries
 * the staff token, and the sign-in call. Plain DOM, no framework; text always goes in as text nodes. */
(function () {
  "use strict";

  /** An element with attributes (`text` = textContent, `on*` = listeners) and children (strings as text). */
  function h(tag, attrs, children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") el.textContent = String(v);
      else if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of [].concat(children || [])) {
      if (c === null || c === undefined || c === false) continue;
      el.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return el;
  }

  class ApiError extends Error {
    constructor(status, body) {
      super(body && typeof body.detail === "string" ? body.detail : "request failed (" + status + ")");
      this.status = status;
      this.body = body || {};
    }
  }

  /** `api(method, path, body)` with the page's current token; a 401 calls `onExpired` (sign in again). */
  function client(getToken, onExpired) {
    return async function api(method, path, body) {
      const res = await fetch(path, {
        method,
        headers: Object.assign({ Authorization: "Bearer " + getToken() }, body !== undefined ? { "Content-Type": "application/json" } : {}),
        body: body !== undefined ? JSON.stringify(body) : undefined,
      });
      if (res.status === 401) { onExpired(); throw new ApiError(401, {}); }
      if (res.status === 204) return null;
      const data = (res.headers.get("content-type") || "").includes("json") ? await res.json() : await res.text();
      if (!res.ok) throw new ApiError(res.status, typeof data === "object" ? data : { detail: data });
      return data;
    };
  }

  /** POST /api/staff/login: the answer ({token, role, name, staff_id}) or an ApiError saying why not. */
  async function signIn(username, password) {
    const res = await fetch("/api/staff/login", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new ApiError(res.status, typeof body.detail === "string" ? body : { detail: "Sign-in failed." });
    return body;
  }

  window.ShopdeskStaff = { h, ApiError, client, signIn };
})();
