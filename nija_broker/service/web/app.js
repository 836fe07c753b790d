/* The live page of nija-broker: polls the broker's JSON API and renders it.
 *
 * Everything shown comes from /v1/... fetches; text goes in with textContent only (an
 * account id, a symbol or a reason is data, never markup). The bearer token, when the
 * API asks for one (401), is asked once and kept in this tab's sessionStorage.
 */
(() => {
  "use strict";

  const TOKEN_KEY = "nija-broker.token";
  const POLL_MS = 1500;
  const TIMEOUT_MS = 8000;
  const CONFIRM_MS = 5000;

  // ------------------------------------------------------------------------ fetching

  class Unauthorized extends Error {}
  class Unreachable extends Error {}
  class ApiError extends Error {
    constructor(status, body) {
      // Errors say {"error"}; a cancel the exchange refused or left unanswered says {"message"}.
      super((body && (body.error || body.message)) || `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }

  async function request(path, options) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    try {
      let response;
      try {
        response = await fetch(path, Object.assign({ cache: "no-store", credentials: "omit", signal: ctl.signal }, options));
      } catch (err) {
        throw new Unreachable(String(err));
      }
      if (response.status === 401) throw new Unauthorized();
      return response;
    } finally {
      clearTimeout(timer);
    }
  }

  async function api(path, method, body) {
    const options = { method: method || "GET", headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
    if (body !== undefined) options.body = JSON.stringify(body);
    const response = await request(path, options);
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      if (!response.ok) throw new ApiError(response.status, null);
      throw new Unreachable("the answer was cut off: " + err);
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  // ------------------------------------------------------------------------ the DOM

  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const chip = (text, kind, title) => el("span", { class: "chip" + (kind ? " " + kind : ""), title }, text);
  const sub = (text) => el("span", { class: "sub" }, text);

  // ------------------------------------------------------------------------ formats

  const DASH = "—";
  const two = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const known = (v) => v !== undefined && v !== null && !(typeof v === "number" && Number.isNaN(v));

  function money(v, quote) {
    if (!known(v)) return DASH;
    return two.format(v) + (quote ? " " + quote : "");
  }
  function signed(v, quote) {
    if (!known(v)) return DASH;
    return (v > 0 ? "+" : v < 0 ? "−" : "") + money(Math.abs(v), quote);
  }
  function tone(v) {
    return !known(v) || v === 0 ? "" : v > 0 ? "pos" : "neg";
  }
  function qty(v) {
    if (!known(v)) return DASH;
    return Number(v).toLocaleString("en-US", { maximumFractionDigits: 8 });
  }
  function price(v) {
    if (!known(v)) return DASH;
    const digits = Math.abs(v) >= 100 ? 2 : 8;
    return Number(v).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: digits });
  }
  function pct(v, digits) {
    if (!known(v)) return DASH;
    const text = Math.abs(Number(v)).toFixed(digits === undefined ? 1 : digits) + "%";
    return (v < 0 && Number(text.slice(0, -1)) !== 0 ? "−" : "") + text;
  }
  function utc(iso) {
    if (!iso) return DASH;
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return d.toISOString().slice(0, 19).replace("T", " ");
  }
  function duration(seconds) {
    if (!known(seconds)) return DASH;
    const s = Math.max(0, Math.round(seconds));
    if (s < 90) return s + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }
  function ago(iso) {
    if (!iso) return "never";
    const t = new Date(iso).getTime();
    if (Number.isNaN(t)) return String(iso);
    return duration((Date.now() - t) / 1000) + " ago";
  }
  function clock(d) {
    return d.toISOString().slice(11, 19) + " UTC";
  }

  const SYNC_KIND = { ok: "good", degraded: "warn", failed: "bad", syncing: "warn" };
  function syncChip(row) {
    const state = row.sync || "offline";
    const failures = row.consecutive_failures ? ` · ${row.consecutive_failures} failed` : "";
    return chip(state + failures, SYNC_KIND[state] || "", row.last_sync ? "last sync " + utc(row.last_sync) + " UTC" : "never synced");
  }
  function entriesChip(row) {
    if (row.paused) return chip("paused", "bad", pausedText(row));
    const tripped = row.breakers_tripped || [];
    if (tripped.length) return chip("breaker: " + tripped.join(", "), "bad", "a circuit breaker blocks entries");
    return chip("allowed", "good");
  }
  function pausedText(row) {
    let text = "Entries paused";
    if (row.paused_by) text += " by " + row.paused_by;
    if (row.paused_at) text += " at " + utc(row.paused_at) + " UTC";
    if (row.pause_reason) text += ": " + row.pause_reason;
    return text;
  }

  // ------------------------------------------------------------------------ the connection

  const conn = { lastOk: null, lost: false };

  function markOk() {
    conn.lastOk = new Date();
    conn.lost = false;
    const badge = $("conn");
    badge.className = "conn live";
    badge.textContent = "live · " + clock(conn.lastOk);
    $("lost").hidden = true;
    document.body.classList.remove("stale");
  }

  function markLost() {
    conn.lost = true;
    const badge = $("conn");
    badge.className = "conn lost";
    badge.textContent = "connection lost";
    const since = conn.lastOk ? "since " + clock(conn.lastOk) : "since this page opened";
    const banner = $("lost");
    banner.textContent = `Connection lost: the broker's API at ${location.host} has not answered ${since}. ` +
      "Retrying every few seconds; what is shown is from before.";
    banner.hidden = false;
    document.body.classList.add("stale");
  }

  let tokenGiven = null;
  let tokenAsked = null;
  /** One prompt at a time: every caller waits for the same answer. */
  function askToken() {
    if (!tokenAsked) tokenAsked = prompt().finally(() => { tokenAsked = null; });
    return tokenAsked;
  }
  function prompt() {
    const wrong = sessionStorage.getItem(TOKEN_KEY) !== null;
    sessionStorage.removeItem(TOKEN_KEY);
    const form = $("token-form");
    form.classList.toggle("wrong", wrong);
    $("token-label").textContent = wrong
      ? "The API refused that token: enter the bearer token again."
      : "This API needs its bearer token (the variable api.token_env names).";
    form.hidden = false;
    document.body.classList.add("locked");
    $("conn").className = "conn";
    $("conn").textContent = "token needed";
    $("token-input").focus();
    return new Promise((resolve) => { tokenGiven = resolve; });
  }

  function setupTokenForm() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token-input").value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $("token-input").value = "";
      $("token-form").hidden = true;
      document.body.classList.remove("locked");
      if (tokenGiven) { const go = tokenGiven; tokenGiven = null; go(); }
    });
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  let wake = null;
  function refreshNow() { if (wake) wake(); }

  async function poll(refresh) {
    for (;;) {
      try {
        await refresh();
        markOk();
      } catch (err) {
        if (err instanceof Unauthorized) { await askToken(); continue; }
        if (err instanceof Unreachable) markLost();
        else console.error(err);
      }
      await Promise.race([sleep(conn.lost ? POLL_MS * 2 : POLL_MS), new Promise((resolve) => { wake = resolve; })]);
      wake = null;
    }
  }

  /** Each call's value or error; an authorization or connection failure ends the round. */
  async function all(calls) {
    const results = await Promise.allSettled(calls);
    for (const r of results) if (r.status === "rejected" && r.reason instanceof Unauthorized) throw r.reason;
    for (const r of results) if (r.status === "rejected" && r.reason instanceof Unreachable) throw r.reason;
    return results.map((r) => (r.status === "fulfilled" ? { ok: true, value: r.value } : { ok: false, error: r.reason }));
  }

  // ------------------------------------------------------------------------ tables

  /** Fill a table's body with rows of cells, each cell labelled by its column's header.
   *
   * Rows are matched by ``key`` to those shown: a cell changes only when its content does,
   * and an action cell keeps its button (a click in progress is never lost to a redraw).
   * A row that was not there before is marked ``fresh`` for a moment.
   */
  function fillTable(table, rows, empty) {
    const heads = [...table.tHead.rows[0].cells];
    const labels = heads.map((th) => th.textContent);
    const numeric = heads.map((th) => th.classList.contains("num"));
    const body = table.tBodies[0];
    const shown = new Map([...body.rows].map((tr) => [tr.dataset.key, tr]));
    const first = table.dataset.filled !== "yes";
    const next = rows.map((row) => {
      const tr = el("tr", { class: row.class, "data-key": row.key });
      row.cells.forEach((cell, i) => {
        const node = cell instanceof Node ? cell : document.createTextNode(cell === undefined || cell === null ? "" : String(cell));
        const classes = [numeric[i] ? "num" : "", i === 0 ? "first" : "", (row.cellClass || [])[i] || ""].filter(Boolean).join(" ");
        tr.append(el("td", { class: classes || undefined, "data-label": labels[i] || undefined }, node));
      });
      const before = shown.get(row.key);
      if (!before || before.cells.length !== tr.cells.length) {
        if (!first) tr.classList.add("fresh");
        return tr;
      }
      const wasFresh = before.classList.contains("fresh");
      before.className = tr.className;
      if (wasFresh) before.classList.add("fresh");
      [...tr.cells].forEach((td, i) => {
        const was = before.cells[i];
        if (td.classList.contains("act")) return;
        if (was.innerHTML !== td.innerHTML) was.replaceChildren(...td.childNodes);
      });
      return before;
    });
    const same = next.length === body.rows.length && next.every((tr, i) => body.rows[i] === tr);
    if (!same) body.replaceChildren(...next);
    table.dataset.filled = "yes";
    table.hidden = rows.length === 0;
    if (empty) empty.hidden = rows.length !== 0;
  }

  function sectionError(card, result) {
    let p = card.querySelector("p.error");
    if (result.ok) { if (p) p.remove(); return false; }
    if (!p) { p = el("p", { class: "error" }); card.append(p); }
    p.textContent = "Not available: " + result.error.message;
    card.querySelector("table").hidden = true;
    card.querySelector("p.empty").hidden = true;
    return true;
  }

  // ------------------------------------------------------------------------ index

  function indexPage() {
    const table = $("accounts");
    const empty = $("accounts-empty");
    poll(async () => {
      const doc = await api("/v1/accounts");
      const rows = doc.accounts || [];
      $("count").textContent = rows.length === 1 ? "1 account" : rows.length + " accounts";
      fillTable(table, rows.map((row) => {
        const q = row.quote_currency || "";
        const unvalued = (row.unvalued_holdings || []).length ? sub("unvalued: " + row.unvalued_holdings.join(", ")) : null;
        const block = row.last_block;
        return {
          key: row.account_id,
          cells: [
            el("span", {}, el("a", { class: "account-link", href: "/accounts/" + encodeURIComponent(row.account_id) }, row.account_id),
              row.exchange ? sub(row.exchange) : null),
            row.tier || DASH,
            el("span", {}, money(row.equity_usd, q), unvalued),
            el("span", { title: "held capital " + money(row.held_capital_usd, q) }, pct(row.held_share_pct)),
            el("span", {}, String(row.open_orders), row.stale_orders ? sub(row.stale_orders + " stale") : null),
            known(row.positions) ? String(row.positions) : DASH,
            el("span", {}, pct(row.drawdown_pct), sub("max " + pct(row.max_drawdown_pct))),
            el("span", { class: tone(row.expectancy_usd) }, signed(row.expectancy_usd, q), sub(row.trades + (row.trades === 1 ? " trade" : " trades"))),
            el("span", {}, syncChip(row), sub(ago(row.last_sync))),
            entriesChip(row),
            block ? el("span", { title: block.reason || "" }, chip(block.rule, "bad"), " ", block.symbol || "", sub(ago(block.at))) : DASH,
          ],
        };
      }), empty);
    });
  }

  // ------------------------------------------------------------------------ account

  function accountPage() {
    const accountId = decodeURIComponent(location.pathname.replace(/^\/accounts\//, "").replace(/\/$/, ""));
    const base = "/v1/accounts/" + encodeURIComponent(accountId);
    document.title = accountId + " · nija-broker";
    $("account-id").textContent = accountId;
    $("crumb-account").textContent = accountId;
    const charts = makeCharts();
    const pending = new Map(); // button key -> time its confirm step ends
    let row = null;

    function message(text, kind) {
      const p = $("action-msg");
      p.textContent = text;
      p.className = "msg" + (kind ? " " + kind : "");
      p.hidden = false;
    }

    async function act(label, path, body) {
      try {
        const answer = await api(path, "POST", body);
        refreshNow();
        return answer;
      } catch (err) {
        if (err instanceof Unauthorized) { message(label + ": the API needs the token again.", "bad"); askToken().then(refreshNow); }
        else if (err instanceof Unreachable) message(label + ": the API did not answer; nothing is known to have changed.", "bad");
        else message(label + ": " + err.message, "bad");
        return null;
      }
    }

    /** A button that asks to be clicked twice (within a few seconds) before it acts. */
    function twoStep(key, label, confirmLabel, run) {
      const armed = (pending.get(key) || 0) > Date.now();
      const button = el("button", { type: "button", class: "small" + (armed ? " confirm" : ""), "data-key": key }, armed ? confirmLabel : label);
      button.addEventListener("click", async () => {
        if ((pending.get(key) || 0) <= Date.now()) {
          pending.set(key, Date.now() + CONFIRM_MS);
          button.textContent = confirmLabel;
          button.classList.add("confirm");
          setTimeout(() => {
            if ((pending.get(key) || 0) <= Date.now() && button.isConnected) {
              button.textContent = label;
              button.classList.remove("confirm");
            }
          }, CONFIRM_MS + 50);
          return;
        }
        pending.delete(key);
        button.disabled = true;
        await run();
        button.disabled = false;
      });
      return button;
    }

    $("pause-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = $("pause-button");
      button.disabled = true;
      const reason = $("pause-reason").value.trim();
      const body = { by: "web page" };
      if (reason) body.reason = reason;
      const answer = await act("Pause", base + "/pause", body);
      button.disabled = false;
      if (answer) {
        $("pause-reason").value = "";
        message(`Entries paused at ${utc(answer.at)} UTC; exits still pass.`, "good");
      }
    });
    $("resume-button").addEventListener("click", async () => {
      const button = $("resume-button");
      button.disabled = true;
      const answer = await act("Resume", base + "/resume");
      button.disabled = false;
      if (answer) {
        const cleared = (answer.resumed || []).length ? "; breakers cleared: " + answer.resumed.join(", ") : "";
        message(`Entries resumed at ${utc(answer.at)} UTC${cleared}.`, "good");
      }
    });

    for (const link of document.querySelectorAll("a[data-csv]")) {
      const what = link.dataset.csv;
      const path = `${base}/${what}.csv`;
      link.href = path;
      link.addEventListener("click", async (event) => {
        // A link cannot carry the bearer token: fetch the file with it, then save the blob.
        event.preventDefault();
        try {
          const response = await request(path, { headers: headers({ Accept: "text/csv" }) });
          if (!response.ok) {
            let why = "HTTP " + response.status;
            try { why = (await response.json()).error || why; } catch (err) { /* not JSON */ }
            throw new ApiError(response.status, { error: why });
          }
          const blob = await response.blob();
          const url = URL.createObjectURL(blob);
          const save = el("a", { href: url, download: `${accountId.replace(/[^A-Za-z0-9._-]+/g, "_")}-${what}.csv` });
          document.body.append(save);
          save.click();
          save.remove();
          setTimeout(() => URL.revokeObjectURL(url), 10000);
        } catch (err) {
          if (err instanceof Unauthorized) { askToken().then(refreshNow); return; }
          message(`${what}.csv: ${err instanceof Unreachable ? "the API did not answer" : err.message}`, "bad");
        }
      });
    }

    function renderHead(r) {
      const chips = $("chips");
      chips.replaceChildren(...[
        r.tier ? chip(r.tier, "", "tier") : null,
        r.exchange ? chip(r.exchange, "", "exchange") : null,
        r.quote_currency ? chip(r.quote_currency, "", "quote currency") : null,
        syncChip(r),
        entriesChip(r),
      ].filter(Boolean));
      const state = $("pause-state");
      const tripped = r.breakers_tripped || [];
      if (r.paused) {
        const detail = [r.paused_by ? "by " + r.paused_by : null, r.paused_at ? utc(r.paused_at) + " UTC" : null, r.pause_reason].filter(Boolean);
        state.replaceChildren(el("strong", {}, "Entries paused"), detail.length ? sub(detail.join(" · ")) : null, sub("exits still pass"));
        state.className = "pause-state paused";
      } else if (tripped.length) {
        state.replaceChildren(el("strong", {}, "Entries blocked by a circuit breaker"), sub(tripped.join(", ")));
        state.className = "pause-state paused";
      } else {
        state.replaceChildren(el("strong", {}, "Entries allowed"));
        state.className = "pause-state";
      }
      $("pause-form").hidden = Boolean(r.paused);
      const resume = $("resume-button");
      resume.hidden = !r.paused && !tripped.length;
      resume.textContent = r.paused ? (tripped.length ? "Resume entries (and clear breakers)" : "Resume entries") : "Clear tripped breakers";
    }

    function tile(label, value, unit, extra, cls) {
      return el("div", { class: "tile" }, el("div", { class: "label" }, label),
        el("div", { class: "value" + (cls ? " " + cls : "") }, value, unit ? " " : null, unit ? el("span", { class: "unit" }, unit) : null),
        extra ? sub(extra) : null);
    }

    function renderTiles(r) {
      const q = r.quote_currency || "";
      $("tiles").replaceChildren(
        tile(q ? `Equity (${q})` : "Equity", money(r.equity_usd), null, (r.unvalued_holdings || []).length ? "unvalued: " + r.unvalued_holdings.join(", ") : null),
        tile("Held in orders", pct(r.held_share_pct), null, money(r.held_capital_usd, q)),
        tile("Drawdown", pct(r.drawdown_pct), null, "max " + pct(r.max_drawdown_pct)),
        tile(q ? `Expectancy (${q})` : "Expectancy", signed(r.expectancy_usd), null, "per trade · " + r.trades + (r.trades === 1 ? " trade" : " trades"), tone(r.expectancy_usd)),
        tile("Open orders", String(r.open_orders), null, r.stale_orders ? r.stale_orders + " stale" : "none stale"),
        tile("Positions", known(r.positions) ? String(r.positions) : DASH, null, null),
        tile("Stale cancels", known(r.stale_cancels) ? String(r.stale_cancels) : DASH, null, "confirmed by the exchange"),
        tile("Last sync", ago(r.last_sync), null, r.last_sync ? utc(r.last_sync) + " UTC" : null),
      );
      const block = r.last_block;
      const box = $("last-block");
      box.hidden = !block;
      if (block) {
        box.replaceChildren(
          el("h2", {}, "Last block ", el("span", { class: "count" }, utc(block.at) + " UTC · " + ago(block.at))),
          el("p", {}, chip(block.rule, "bad"), " ", block.symbol ? el("strong", {}, block.symbol) : null, block.symbol ? " — " : "", block.reason || ""),
        );
      }
    }

    function renderOrders(list) {
      const orders = list.orders || [];
      $("orders-count").textContent = String(orders.length);
      const now = Date.now();
      fillTable($("orders"), orders.map((o) => ({
        key: o.id,
        cells: [
          o.symbol,
          el("span", { class: o.side === "buy" ? "pos" : "neg" }, o.side),
          o.role && o.role !== "entry" ? `${o.type} · ${o.role}` : o.type,
          price(o.price !== null && o.price !== undefined ? o.price : o.stop_price),
          qty(o.amount),
          o.filled ? qty(o.filled) : "0",
          duration((now - new Date(o.created_at).getTime()) / 1000),
          o.id,
          twoStep("cancel:" + o.id, "Cancel", "Confirm cancel", async () => {
            const answer = await act(`Cancel ${o.id}`, `${base}/orders/${encodeURIComponent(o.id)}/cancel`);
            if (answer) {
              const how = answer.confirmed ? "confirmed by the exchange" : "not confirmed by the exchange yet";
              message(`Order ${o.id}: ${answer.status} (${how}).`, answer.confirmed ? "good" : "");
            }
          }),
        ],
        cellClass: [null, null, null, null, null, null, null, "id", "act"],
      })), $("orders-card").querySelector(".empty"));
    }

    function renderPositions(doc) {
      const positions = doc.positions || [];
      const q = doc.quote_currency || "";
      $("positions-count").textContent = String(positions.length);
      fillTable($("positions"), positions.map((p) => ({
        key: p.symbol || p.asset,
        cells: [
          p.symbol || p.asset,
          qty(p.amount),
          price(p.average_cost),
          money(p.value, q),
          el("span", { class: tone(p.unrealized_pnl) }, signed(p.unrealized_pnl, q)),
          p.source === "both" ? "ledger + exchange" : p.source,
        ],
      })), $("positions-card").querySelector(".empty"));
    }

    function renderReservations(doc, q) {
      const list = doc.reservations || [];
      $("reservations-count").textContent = String(list.length);
      fillTable($("reservations"), list.map((r) => ({
        key: r.reservation_id,
        cells: [
          r.symbol,
          el("span", { class: r.side === "buy" ? "pos" : "neg" }, r.side),
          money(r.reserved_usd, q),
          chip(r.state === "in_flight" ? "in flight" : r.state, r.state === "settling" ? "warn" : ""),
          r.why,
          duration(r.age_s),
          duration(r.expires_in_s),
          twoStep("release:" + r.reservation_id, "Release", "Confirm release", async () => {
            const answer = await act("Release", "/v1/guard/release", { reservation_id: r.reservation_id });
            if (answer) message(`Reservation for ${r.symbol} released.`, "good");
          }),
        ],
        cellClass: [null, null, null, null, "reason", null, null, "act"],
      })), $("reservations-card").querySelector(".empty"));
    }

    function renderTrades(doc, q) {
      const trades = doc.trades || [];
      $("trades-count").textContent = String(trades.length);
      fillTable($("trades"), trades.map((t) => {
        const net = known(t.net_pnl) ? t.net_pnl : t.pnl - (t.fees || 0);
        return {
          key: t.trade_id,
          cells: [
            utc(t.exit_time),
            t.symbol,
            t.side === "buy" ? "long" : "short",
            qty(t.quantity),
            price(t.entry_price),
            price(t.exit_price),
            el("span", { class: tone(net) }, signed(net, q)),
            el("span", { class: tone(t.pnl_pct) }, pct(t.pnl_pct, 2)),
            duration(t.hold_time_seconds),
          ],
        };
      }), $("trades-card").querySelector(".empty"));
    }

    function renderDecisions(doc) {
      const decisions = doc.decisions || [];
      $("decisions-count").textContent = String(decisions.length);
      fillTable($("decisions"), decisions.map((d) => ({
        key: JSON.stringify([d.at, d.client_order_id, d.rule, d.symbol, d.side, d.allowed]),
        class: d.allowed ? "" : "blocked",
        cells: [
          utc(d.at),
          d.allowed ? chip("allowed", "good") : chip("blocked", "bad"),
          d.rule || DASH,
          d.symbol || DASH,
          d.side || DASH,
          d.reason || "",
        ],
        cellClass: [null, null, null, null, null, "reason"],
      })), $("decisions-card").querySelector(".empty"));
    }

    poll(async () => {
      const [one, orders, positions, reservations, trades, decisions, equity] = await all([
        api(base),
        api(base + "/orders?status=open"),
        api(base + "/positions"),
        api(base + "/reservations"),
        api(base + "/trades?limit=25"),
        api(base + "/guard-decisions?limit=25"),
        api(base + "/equity?limit=2000"),
      ]);
      if (!one.ok) {
        message(one.error.status === 404 ? `Unknown account ${JSON.stringify(accountId)}.` : one.error.message, "bad");
        return;
      }
      row = one.value;
      const q = row.quote_currency || "";
      renderHead(row);
      renderTiles(row);
      if (!sectionError($("orders-card"), orders)) renderOrders(orders.value);
      if (!sectionError($("positions-card"), positions)) renderPositions(positions.value);
      if (!sectionError($("reservations-card"), reservations)) renderReservations(reservations.value, q);
      if (!sectionError($("trades-card"), trades)) renderTrades(trades.value, q);
      if (!sectionError($("decisions-card"), decisions)) renderDecisions(decisions.value);
      $("equity-unit").textContent = q;
      charts.update(equity, q);
    });
  }

  // ------------------------------------------------------------------------ charts

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function makeCharts() {
    const boxes = { equity: $("chart-equity"), drawdown: $("chart-drawdown") };
    const made = {};
    let lastKey = null;
    const tzDate = (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC");

    /** Idle (no cursor), the legend shows the latest point; under the cursor, that point. */
    const shown = (u, v, sidx, idx) => {
      if (idx !== null && idx !== undefined) return v;
      const values = u.data[sidx] || [];
      return values.length ? values[values.length - 1] : null;
    };

    /** Tick labels in UTC, as fine as the span needs: 13:40:05, 13:40, 12-02 13:40, 12-02. */
    function timeTicks(u, splits) {
      const span = splits.length > 1 ? splits[splits.length - 1] - splits[0] : 0;
      return splits.map((ts) => {
        const iso = new Date(ts * 1000).toISOString();
        if (span >= 4 * 86400) return iso.slice(5, 10);
        if (span >= 86400) return iso.slice(5, 10) + " " + iso.slice(11, 16);
        if (span >= 300) return iso.slice(11, 16);
        return iso.slice(11, 19);
      });
    }

    /** A flat curve still gets a readable scale (uPlot would span 0 to twice the value). */
    function equityRange(u, min, max) {
      if (!known(min) || !known(max)) return [0, 1];
      const pad = max > min ? (max - min) * 0.1 : Math.max(Math.abs(max) * 0.005, 0.01);
      return [min - pad, max + pad];
    }
    /** Drawdown is at most 0 (at the peak); at least half a per cent shows, so a flat 0 reads as 0. */
    function drawdownRange(u, min) {
      const low = known(min) ? Math.min(min, 0) : 0;
      return [Math.min(low * 1.15, -0.5), 0];
    }

    /** An equity tick with the decimals its step needs: 10,004 or 399.50. */
    function level(v, incr) {
      const digits = incr >= 1 ? 0 : incr >= 0.1 ? 1 : 2;
      return Number(v).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
    }

    /** The y axis as wide as its longest label (uPlot's fixed default cuts "10,004.00"). */
    const measure = document.createElement("canvas").getContext("2d");
    function axisWidth(u, values) {
      if (!values || !values.length) return 40;
      measure.font = "12px " + getComputedStyle(document.body).fontFamily;
      const widest = Math.max(...values.map((v) => measure.measureText(String(v)).width));
      return Math.ceil(widest) + 18;
    }

    function options(kind, width, quote) {
      const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--grid"), width: 1 }, ticks: { stroke: cssVar("--grid"), width: 1 } };
      const isEquity = kind === "equity";
      return {
        width,
        height: width < 500 ? 170 : 220,
        tzDate,
        cursor: { drag: { x: false, y: false } },
        legend: { show: true, live: true },
        scales: { x: { time: true }, y: { range: isEquity ? equityRange : drawdownRange } },
        series: [
          { label: "UTC", value: (u, v, s, i) => { const t = shown(u, v, s, i); return known(t) ? utc(new Date(t * 1000).toISOString()) : DASH; } },
          isEquity
            ? { label: "Equity" + (quote ? " (" + quote + ")" : ""), stroke: cssVar("--chart-line"), fill: cssVar("--chart-fill"), width: 2,
                value: (u, v, s, i) => money(shown(u, v, s, i)), points: { show: false } }
            : { label: "Drawdown", stroke: cssVar("--chart-dd"), fill: cssVar("--chart-dd-fill"), width: 2,
                value: (u, v, s, i) => pct(shown(u, v, s, i), 2), points: { show: false } },
        ],
        axes: [
          Object.assign({}, axis, { space: 70, values: timeTicks }),
          Object.assign({}, axis, {
            size: axisWidth,
            values: (u, ticks, axisIdx, space, incr) => ticks.map((t) => (isEquity ? level(t, incr) : t === 0 ? "0%" : pct(t, 1))),
          }),
        ],
      };
    }

    function draw(kind, data, quote) {
      const box = boxes[kind];
      if (data[0].length === 0) {
        if (made[kind]) { made[kind].destroy(); delete made[kind]; }
        box.replaceChildren(el("p", { class: "empty" }, "No equity points yet."));
        return;
      }
      if (!made[kind]) {
        box.replaceChildren();
        made[kind] = new uPlot(options(kind, Math.max(box.clientWidth, 200), quote), data, box);
      } else {
        made[kind].setData(data);
      }
    }

    const resize = new ResizeObserver(() => {
      for (const [kind, chart] of Object.entries(made)) {
        const width = Math.max(boxes[kind].clientWidth, 200);
        if (Math.abs(chart.width - width) > 1) chart.setSize({ width, height: width < 500 ? 170 : 220 });
      }
    });
    resize.observe(boxes.equity);
    resize.observe(boxes.drawdown);
    // The charts take their colours from the style sheet when made: made again on a switch.
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
      for (const kind of Object.keys(made)) { made[kind].destroy(); delete made[kind]; }
      lastKey = null;
      refreshNow();
    });

    return {
      update(result, quote) {
        if (!result.ok) {
          const text = "Not available: " + result.error.message;
          for (const kind of Object.keys(boxes)) {
            if (made[kind]) { made[kind].destroy(); delete made[kind]; }
            boxes[kind].replaceChildren(el("p", { class: "error" }, text));
          }
          lastKey = null;
          return;
        }
        const points = result.value.points || [];
        const key = JSON.stringify([points.length, points.length ? points[points.length - 1] : null, points.length ? points[0].at : null, quote]);
        if (key === lastKey) return;
        lastKey = key;
        const xs = points.map((p) => new Date(p.at).getTime() / 1000);
        draw("equity", [xs, points.map((p) => p.equity)], quote);
        draw("drawdown", [xs, points.map((p) => (known(p.drawdown_pct) ? -p.drawdown_pct : null))], quote);
      },
    };
  }

  // ------------------------------------------------------------------------ start

  document.addEventListener("DOMContentLoaded", () => {
    setupTokenForm();
    if (document.body.dataset.page === "account") accountPage();
    else indexPage();
  });
})();
