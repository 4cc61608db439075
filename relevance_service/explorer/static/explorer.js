// relevance explorer: a user's history next to what the serving bundle recommends, and why.
//
// Uses only the public API (GET /v1/users/{id}/recommendations, POST /v1/recommendations,
// GET /v1/items/{id}/similar, POST /v1/events, GET /v1/bundle), so what it shows is exactly what any client
// gets. Every piece of data is rendered with textContent (never innerHTML): item titles and reasons come
// from catalogs that sellers write. No framework and no build step: the page must work with no internet.
"use strict";

(() => {
  const TOKEN_KEY = "relevance.explorer.token";
  const MAX_HISTORY = 50; // what a guest posts back: the server keeps only the last few anyway
  const BUNDLE_POLL_MS = 30000; // the service hot-swaps bundles; show the switch without a reload

  const $ = (id) => document.getElementById(id);
  const state = {
    mode: null, // "user" | "guest"
    userId: null,
    sessionId: null,
    history: [], // oldest first: {item, event_type, ts (ISO)}
    bundleVersion: null,
    categories: new Set(),
    locations: new Set(),
    recSeq: 0, // request sequence numbers: a slow answer never overwrites a newer one
    simSeq: 0,
    simItem: null,
    guestEventsFailed: false,
    busy: 0,
  };

  // -- storage (may be disabled: private windows, policies) ---------------------------------------------
  function getToken() {
    try {
      return localStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return "";
    }
  }
  function setToken(value) {
    try {
      if (value) localStorage.setItem(TOKEN_KEY, value);
      else localStorage.removeItem(TOKEN_KEY);
    } catch {
      status("this browser does not allow localStorage: the token lasts until the page is closed", true);
    }
  }

  // -- HTTP ---------------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function describeError(status, data, text) {
    let msg = "";
    if (data && typeof data === "object") {
      msg = String(data.detail || "");
      if (Array.isArray(data.extra)) {
        const parts = data.extra
          .filter((e) => e && typeof e === "object")
          .map((e) => [e.key, e.message].filter(Boolean).join(": "));
        if (parts.length) msg += " (" + parts.join("; ") + ")";
      }
    }
    if (!msg) msg = (text || "").slice(0, 200) || "no details";
    if (status === 401) msg += " — enter the service's API token under “API token”";
    if (status === 404 && /events/.test(msg)) msg += " — write endpoints are disabled on this service";
    return `HTTP ${status}: ${msg}`;
  }

  async function api(method, path, { body, auth = false } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const token = getToken();
    if (auth && token) headers.Authorization = "Bearer " + token;
    let resp;
    try {
      resp = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (e) {
      throw new ApiError(0, `cannot reach the service (${e.message})`);
    }
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!resp.ok) throw new ApiError(resp.status, describeError(resp.status, data, text));
    return data;
  }

  function busy(delta) {
    state.busy += delta;
    document.body.dataset.busy = state.busy > 0 ? "1" : "0";
  }

  function status(message, isError = false) {
    const el = $("status");
    el.textContent = message;
    el.classList.toggle("error", Boolean(isError));
  }

  // -- filters --------------------------------------------------------------------------------------------
  function filters() {
    const f = {};
    const cat = $("f-category").value.trim();
    if (cat) f.category = cat;
    const maxPrice = $("f-max-price").value.trim();
    if (maxPrice !== "") {
      const v = Number(maxPrice);
      if (Number.isFinite(v) && v >= 0) f.max_price = v;
    }
    const loc = $("f-location").value.trim();
    if (loc) f.location = loc;
    const k = parseInt($("f-k").value, 10);
    f.k = Number.isFinite(k) ? Math.min(100, Math.max(1, k)) : 12;
    return f;
  }

  function queryString(f) {
    const q = new URLSearchParams();
    for (const [key, value] of Object.entries(f)) q.set(key, String(value));
    return q.toString();
  }

  function learn(item) {
    // filter suggestions come from what the service has shown: the API has no "list categories" endpoint
    if (item.category_path) {
      const levels = item.category_path.split(">").map((s) => s.trim()).filter(Boolean);
      for (let i = 1; i <= levels.length; i++) state.categories.add(levels.slice(0, i).join(" > "));
    }
    if (item.location) state.locations.add(item.location);
  }

  function refreshSuggestions() {
    for (const [id, values] of [
      ["categories", state.categories],
      ["locations", state.locations],
    ]) {
      const list = $(id);
      const sorted = [...values].sort();
      if (list.childElementCount === sorted.length) continue;
      list.replaceChildren(
        ...sorted.map((v) => {
          const opt = document.createElement("option");
          opt.value = v;
          return opt;
        }),
      );
    }
  }

  // -- cards ----------------------------------------------------------------------------------------------
  const priceFormat = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  function hue(text) {
    let h = 0;
    for (const ch of text) h = (h * 31 + ch.codePointAt(0)) >>> 0;
    return h % 360;
  }

  function initials(text) {
    const words = String(text || "?").split(/\s+/).filter(Boolean);
    const chars = words.slice(0, 2).map((w) => Array.from(w)[0] || "");
    return chars.join("").toUpperCase() || "?";
  }

  function setText(root, selector, text) {
    const el = root.querySelector(selector);
    el.textContent = text == null || text === "" ? "–" : String(text);
    return el;
  }

  function card(item, { showWhy = true, eventType = null } = {}) {
    const node = $("card-template").content.firstElementChild.cloneNode(true);
    node.dataset.itemId = item.item_id;
    if (typeof item.price === "number") node.dataset.price = String(item.price);
    // a placeholder colored by category instead of the image: no external requests (the network may be closed, and a
    // page that fetches seller-supplied URLs leaks who looks at what)
    const ph = node.querySelector(".ph");
    ph.style.backgroundColor = `hsl(${hue(item.category_path || item.brand || item.item_id)} 50% 42%)`;
    setText(ph, ".initials", initials(item.title || item.item_id));
    ph.title = item.image_url ? "image: " + item.image_url : "no image";
    setText(node, ".title", item.title || item.item_id);
    setText(node, ".price", typeof item.price === "number" ? priceFormat.format(item.price) : null);
    setText(node, ".brand", item.brand);
    setText(node, ".cat", item.category_path);
    setText(node, ".location", item.location);
    setText(node, ".condition", item.condition);
    setText(node, ".iid", item.item_id);
    if (showWhy && typeof item.score === "number") {
      setText(node, ".score", item.score.toFixed(4));
      setText(node, ".reason", item.reason);
    } else if (eventType) {
      setText(node, ".score", eventType);
      node.querySelector(".reason").textContent = "";
    } else {
      node.querySelector(".why").remove();
    }
    const onView = () => view(item);
    node.addEventListener("click", (e) => {
      if (e.target.closest("button")) return;
      onView();
    });
    node.addEventListener("keydown", (e) => {
      if ((e.key === "Enter" || e.key === " ") && e.target === node) {
        e.preventDefault();
        onView();
      }
    });
    node.querySelector(".similar-btn").addEventListener("click", () => showSimilar(item));
    learn(item);
    return node;
  }

  function renderCards(container, items, opts) {
    if (!items.length) {
      const p = document.createElement("p");
      p.className = "empty muted";
      p.textContent = "nothing matches: widen the filters";
      container.replaceChildren(p);
    } else {
      container.replaceChildren(...items.map((it) => card(it, opts)));
    }
    refreshSuggestions();
  }

  function renderHistory() {
    const who = $("history-who");
    const note = $("history-note");
    if (state.mode === "user") {
      who.textContent = "of user " + state.userId;
      note.textContent =
        "Views sent from this page (newest first). The user's earlier history is stored by the service, " +
        "which has no endpoint to read it back: the reasons on the recommendations name what it used.";
    } else if (state.mode === "guest") {
      who.textContent = "of guest session " + state.sessionId;
      note.textContent =
        "Kept in this page and posted with every request (POST /v1/recommendations); nothing is stored." +
        (state.guestEventsFailed ? " Views are not logged to the service (no valid API token)." : "");
    } else {
      who.textContent = "";
      note.textContent = "Enter a user id or start a guest session, then click items.";
    }
    const items = [...state.history].reverse();
    const container = $("history");
    if (!items.length) {
      const p = document.createElement("p");
      p.className = "empty muted";
      p.textContent = state.mode ? "no views yet: click a card" : "";
      container.replaceChildren(p);
      return;
    }
    container.replaceChildren(...items.map((h) => card(h.item, { showWhy: false, eventType: h.event_type })));
  }

  // -- recommendations ------------------------------------------------------------------------------------
  async function loadRecommendations() {
    if (!state.mode) return;
    const seq = ++state.recSeq;
    const f = filters();
    const started = performance.now();
    busy(+1);
    try {
      let resp;
      if (state.mode === "user") {
        resp = await api("GET", `/v1/users/${encodeURIComponent(state.userId)}/recommendations?${queryString(f)}`);
      } else {
        const history = state.history.map((h) => ({ item_id: h.item.item_id, event_type: h.event_type, timestamp: h.ts }));
        resp = await api("POST", "/v1/recommendations", { body: { ...f, history } });
      }
      if (seq !== state.recSeq) return; // superseded by a newer request
      const ms = Math.round(performance.now() - started);
      renderCards($("recs"), resp.items, { showWhy: true });
      $("recs").dataset.requestId = resp.request_id;
      $("recs").dataset.strategy = resp.strategy;
      $("recs-meta").textContent =
        `${resp.items.length} items · strategy ${resp.strategy}` +
        (resp.widened ? ` · widened (${resp.widened})` : "") +
        ` · bundle ${resp.bundle_version} · ${ms} ms`;
      status(`recommendations updated (request ${resp.request_id})`);
      if (resp.bundle_version !== state.bundleVersion) loadBundle();
    } catch (e) {
      if (seq === state.recSeq) {
        $("recs").replaceChildren();
        $("recs").dataset.requestId = "";
        $("recs-meta").textContent = "";
        status(e.message, true);
      }
    } finally {
      busy(-1);
    }
  }

  async function showSimilar(item) {
    const seq = ++state.simSeq;
    state.simItem = item;
    const panel = $("similar-panel");
    panel.hidden = false;
    $("similar-of").textContent = item.title || item.item_id;
    busy(+1);
    try {
      const resp = await api("GET", `/v1/items/${encodeURIComponent(item.item_id)}/similar?${queryString(filters())}`);
      if (seq !== state.simSeq) return;
      renderCards($("similar"), resp.items, { showWhy: true });
      $("similar").dataset.requestId = resp.request_id;
      panel.scrollIntoView({ block: "nearest" });
    } catch (e) {
      if (seq === state.simSeq) {
        $("similar").replaceChildren();
        status(e.message, true);
      }
    } finally {
      busy(-1);
    }
  }

  function pushHistory(item, eventType) {
    state.history.push({ item, event_type: eventType, ts: new Date().toISOString() });
    if (state.history.length > MAX_HISTORY) state.history.splice(0, state.history.length - MAX_HISTORY);
    renderHistory();
  }

  async function view(item) {
    if (!state.mode) startGuest({ load: false });
    const event = { item_id: item.item_id, event_type: "view", session_id: state.sessionId };
    if (state.mode === "user") {
      busy(+1);
      try {
        // the service appends it to the user's stored history before answering: the next request sees it
        await api("POST", "/v1/events", { auth: true, body: { events: [{ ...event, user_id: state.userId }] } });
      } catch (e) {
        status("the view was not recorded: " + e.message, true);
        return;
      } finally {
        busy(-1);
      }
      pushHistory(item, "view");
    } else {
      pushHistory(item, "view");
      // best effort: an anonymous event still teaches the next bundle; the guest's page works without it
      api("POST", "/v1/events", { auth: true, body: { events: [event] } }).catch(() => {
        if (!state.guestEventsFailed) {
          state.guestEventsFailed = true;
          renderHistory();
        }
      });
    }
    await loadRecommendations();
    if (state.simItem && !$("similar-panel").hidden) showSimilar(state.simItem);
  }

  // -- sessions -------------------------------------------------------------------------------------------
  function newSessionId(prefix) {
    const bytes = new Uint8Array(6);
    crypto.getRandomValues(bytes);
    return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function setUrl(params) {
    const q = new URLSearchParams(params).toString();
    history.replaceState(null, "", location.pathname + (q ? "?" + q : ""));
  }

  function startUser(userId) {
    state.mode = "user";
    state.userId = userId;
    state.sessionId = newSessionId("explorer-");
    state.history = [];
    $("user-id").value = userId;
    setUrl({ user: userId });
    renderHistory();
    return loadRecommendations();
  }

  function startGuest({ load = true } = {}) {
    state.mode = "guest";
    state.userId = null;
    state.sessionId = newSessionId("guest-");
    state.history = [];
    state.guestEventsFailed = false;
    $("user-id").value = "";
    setUrl({ guest: "1" });
    renderHistory();
    return load ? loadRecommendations() : Promise.resolve();
  }

  // -- bundle ---------------------------------------------------------------------------------------------
  function flatten(obj, prefix = "", out = []) {
    for (const [key, value] of Object.entries(obj || {})) {
      const name = prefix ? `${prefix}.${key}` : key;
      if (value && typeof value === "object" && !Array.isArray(value)) flatten(value, name, out);
      else out.push([name, value]);
    }
    return out;
  }

  function formatValue(v) {
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(4);
    if (v == null) return "–";
    return Array.isArray(v) ? v.join(", ") : String(v);
  }

  async function loadBundle() {
    try {
      const b = await api("GET", "/v1/bundle");
      const m = b.manifest || {};
      state.bundleVersion = b.version;
      $("bundle-version").textContent = b.version;
      const facts = [
        `${b.n_items.toLocaleString()} items`,
        b.live_items ? `${b.live_items} live` : null,
        `dim ${b.dim}`,
        m.index_factory ? `index ${m.index_factory}` : null,
        m.created_at ? `created ${m.created_at}` : null,
        m.model && m.model.version ? `model ${m.model.version}` : null,
      ].filter(Boolean);
      $("bundle-facts").textContent = facts.join(" · ");

      const metrics = flatten(m.metrics);
      const table = $("bundle-metrics");
      table.tBodies[0].replaceChildren(
        ...metrics.map(([name, value]) => {
          const tr = document.createElement("tr");
          const th = document.createElement("th");
          th.textContent = name;
          const td = document.createElement("td");
          td.textContent = formatValue(value);
          tr.append(th, td);
          return tr;
        }),
      );
      table.hidden = metrics.length === 0;
      $("bundle-no-metrics").hidden = metrics.length !== 0;

      const gates = Object.entries((m.extra && m.extra.gates) || {});
      const list = $("bundle-gates");
      list.replaceChildren(
        ...gates.map(([name, g]) => {
          const li = document.createElement("li");
          const ok = Boolean(g && g.passed);
          li.className = ok ? "pass" : "fail";
          li.textContent = `${ok ? "✓" : "✗"} ${name}`;
          if (g && g.description) li.title = String(g.description);
          return li;
        }),
      );
      list.hidden = gates.length === 0;
    } catch (e) {
      $("bundle-version").textContent = "unavailable";
      $("bundle-facts").textContent = e.message;
    }
  }

  // -- wiring ---------------------------------------------------------------------------------------------
  function init() {
    $("user-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const id = $("user-id").value.trim();
      if (id) startUser(id);
    });
    $("guest").addEventListener("click", () => startGuest());
    $("filter-form").addEventListener("submit", (e) => {
      e.preventDefault();
      if (!state.mode) startGuest();
      else loadRecommendations();
      if (state.simItem && !$("similar-panel").hidden) showSimilar(state.simItem);
    });
    $("clear-filters").addEventListener("click", () => {
      for (const id of ["f-category", "f-max-price", "f-location"]) $(id).value = "";
      if (state.mode) loadRecommendations();
      if (state.simItem && !$("similar-panel").hidden) showSimilar(state.simItem);
    });
    $("similar-close").addEventListener("click", () => {
      $("similar-panel").hidden = true;
      state.simItem = null;
    });
    $("token").value = getToken();
    $("token-save").addEventListener("click", () => {
      setToken($("token").value.trim());
      status("token saved in this browser");
    });
    $("token-forget").addEventListener("click", () => {
      $("token").value = "";
      setToken("");
      status("token forgotten");
    });

    renderHistory();
    loadBundle();
    setInterval(loadBundle, BUNDLE_POLL_MS);
    const params = new URLSearchParams(location.search);
    if (params.get("user")) startUser(params.get("user").slice(0, 256));
    else if (params.get("guest")) startGuest();
    document.body.dataset.ready = "1";
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
