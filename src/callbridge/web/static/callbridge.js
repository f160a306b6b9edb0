/*
 * callbridge — the visitor's side.
 *
 * One file for the contact page (/static/callbridge.js) and for other sites (/widget.js):
 *  - registers the client tool `initiatePhoneCall` on the ElevenLabs widget's
 *    `elevenlabs-convai:call` event (keeping any other tools already there), and captures
 *    the web conversation id through `config.onConnect`;
 *  - shows a live status panel (bottom-left, or inside `[data-callbridge-status-slot]` on
 *    a wide screen when the page has one) that follows the call over Server-Sent Events,
 *    falls back to polling, and survives moving to another page (sessionStorage);
 *  - drives the call-request form (`form[data-callbridge-form]`) when the page has one;
 *  - allows one live call at a time: while one is live, asking for another is refused and
 *    the form says so (the panel never switches to another call on its own).
 *
 * The number the visitor typed is shown in full on their own page (the form's message and
 * the panel), to let them spot a typo; it is masked in the console and in what goes back
 * to the agent, as the server masks it everywhere.
 *  - call me later: a request may carry `at`; a call scheduled for later shows "We'll call
 *    you at 9:00 (your time)" with a Cancel button (the call's own cancel capability), and
 *    a refusal in the callee's quiet hours (409 `quiet_hours`) offers the next allowed
 *    times as one-click choices.
 *
 * All requests go to absolute callbridge URLs with `credentials: "omit"`, so the same code
 * works cross-origin. No inline handlers, no inline style attributes: fine under a strict CSP.
 */
(() => {
  "use strict";

  const LOADED = Symbol.for("callbridge.loaded");
  if (window[LOADED]) return;
  window[LOADED] = true;

  // ---------------------------------------------------------------- configuration
  // `/widget.js` replaces the placeholder below with {"baseUrl": …, "turnstileSiteKey": …}.
  const BAKED = /*CALLBRIDGE_CONFIG*/null/*END*/;
  const script = document.currentScript;

  function resolveBaseUrl() {
    if (script && script.dataset && script.dataset.baseUrl) return script.dataset.baseUrl;
    if (script && script.src) {
      try { return new URL(script.src).origin; } catch (_) { /* fall through */ }
    }
    if (BAKED && BAKED.baseUrl) return BAKED.baseUrl;
    return window.location.origin;
  }

  const BASE = resolveBaseUrl().replace(/\/+$/, "");
  const TURNSTILE_SITE_KEY =
    (script && script.dataset && script.dataset.turnstileSiteKey) ||
    (BAKED && BAKED.turnstileSiteKey) || null;
  const STORAGE_KEY = "callbridge.call";
  const CONVERSATION_KEY = "callbridge.conversation";
  const TERMINAL = new Set(["completed", "voicemail", "busy", "no-answer", "canceled", "failed", "agent_failed", "missed"]);
  const POLL_MS = 3000;
  const SHOW_ENDED_MS = 10 * 60 * 1000;
  const NETWORK_MESSAGE = "I couldn't reach the call service. Please try again in a moment.";

  const api = (path) => BASE + path;

  // ---------------------------------------------------------------- phone numbers
  /** Return the number with only a leading "+" and digits, or null if it can't be one. */
  function normaliseNumber(raw) {
    if (typeof raw !== "string" && typeof raw !== "number") return null;
    let text = String(raw).trim();
    if (!/^[+0-9\s().\-\/]+$/.test(text)) return null;
    text = text.replace(/^00/, "+");
    const plus = text.startsWith("+");
    const digits = text.replace(/\D/g, "");
    if (digits.length < 7 || digits.length > 15) return null;
    return (plus ? "+" : "") + digits;
  }

  /** Mask a number the way the server does: "+1•••••••8900". */
  function maskNumber(raw) {
    const n = normaliseNumber(raw) || String(raw || "");
    const plus = n.startsWith("+") ? "+" : "";
    const digits = n.replace(/\D/g, "");
    if (digits.length <= 5) return plus + "•".repeat(digits.length);
    const head = plus ? digits.slice(0, 1) : "";
    const tail = digits.slice(-4);
    return plus + head + "•".repeat(digits.length - head.length - 4) + tail;
  }

  const INVALID_NUMBER = "Please enter a whole phone number, for example +1 415 555 0100.";
  const CALL_IN_PROGRESS = "You already have a call in progress. You can ask for another once it ends.";
  const CALL_BOOKED = "You already have a call booked. Cancel it to ask for another.";

  /** The number as the visitor typed it, tidied (for their own eyes only). */
  function shownNumber(raw) {
    return String(raw || "").replace(/\s+/g, " ").trim().slice(0, 32);
  }

  // ---------------------------------------------------------------- HTTP
  class CallError extends Error {
    constructor(message, code, status, details) {
      super(message);
      this.name = "CallError";
      this.code = code || "error";
      this.status = status || 0;
      this.details = details || {};
    }

    /** The next allowed times a quiet-hours refusal offers (`[{utc, local, zone}]`). */
    get offers() {
      return this.code === "quiet_hours" && Array.isArray(this.details.next_allowed)
        ? this.details.next_allowed : [];
    }
  }

  /** A UTC instant in the visitor's own time: "9:00 AM" today, "Wed 9:00 AM" another day. */
  function formatWhen(iso) {
    const when = new Date(iso);
    if (Number.isNaN(when.getTime())) return String(iso || "");
    const time = when.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
    const today = new Date();
    if (when.toDateString() === today.toDateString()) return time;
    const day = when.toLocaleDateString([], { weekday: "short", month: "short", day: "numeric" });
    return day + ", " + time;
  }

  async function readError(response) {
    let message = "";
    let code = "http_" + response.status;
    let details = {};
    try {
      const body = await response.json();
      if (body && typeof body === "object") details = body;
      if (body && body.error) {
        if (typeof body.error === "string") message = body.error;
        else {
          message = body.error.message || "";
          code = body.error.code || code;
        }
      } else if (body && typeof body.detail === "string") {
        message = body.detail;
      }
    } catch (_) { /* not JSON */ }
    if (!message) {
      message = response.status === 429
        ? "Too many call requests right now. Please try again later."
        : "The call could not be requested (error " + response.status + ").";
    }
    return new CallError(message, code, response.status, details);
  }

  async function fetchJson(path, init) {
    let response;
    try {
      response = await fetch(api(path), Object.assign({
        credentials: "omit",
        cache: "no-store",
        mode: "cors",
        headers: { Accept: "application/json" },
      }, init || {}));
    } catch (_) {
      throw new CallError(NETWORK_MESSAGE, "network");
    }
    if (!response.ok) throw await readError(response);
    try {
      return await response.json();
    } catch (_) {
      throw new CallError("The call service sent an unreadable answer.", "bad_response", response.status);
    }
  }

  // ---------------------------------------------------------------- Turnstile (optional)
  let turnstileLoading = null;

  function loadTurnstile() {
    if (window.turnstile) return Promise.resolve(window.turnstile);
    if (!turnstileLoading) {
      turnstileLoading = new Promise((resolve, reject) => {
        const tag = document.createElement("script");
        tag.src = "https://challenges.cloudflare.com/turnstile/v0/api.js?render=explicit";
        tag.async = true;
        tag.addEventListener("load", () => resolve(window.turnstile));
        tag.addEventListener("error", () => reject(new CallError("The human check could not load.", "turnstile")));
        document.head.appendChild(tag);
      });
    }
    return turnstileLoading;
  }

  async function turnstileToken() {
    if (!TURNSTILE_SITE_KEY) return null;
    const turnstile = await loadTurnstile();
    let holder = document.querySelector("[data-callbridge-turnstile]");
    if (!holder) {
      holder = document.createElement("div");
      holder.className = "callbridge-turnstile";
      document.body.appendChild(holder);
    }
    return new Promise((resolve, reject) => {
      const id = turnstile.render(holder, {
        sitekey: TURNSTILE_SITE_KEY,
        action: "call",
        appearance: "interaction-only",
        callback: (token) => { resolve(token); setTimeout(() => turnstile.remove(id), 0); },
        "error-callback": () => reject(new CallError("The human check failed. Please try again.", "turnstile")),
      });
    });
  }

  // ---------------------------------------------------------------- requesting a call
  let conversationId = null;
  try { conversationId = sessionStorage.getItem(CONVERSATION_KEY); } catch (_) { /* storage off */ }

  function rememberConversation(id) {
    if (!id) return;
    conversationId = String(id);
    try { sessionStorage.setItem(CONVERSATION_KEY, conversationId); } catch (_) { /* storage off */ }
  }

  function cleanText(value, max) {
    if (value === undefined || value === null) return "";
    return String(value).trim().slice(0, max);
  }

  let pending = null;

  /** Ask callbridge for a call; resolve to the server's success body, or throw CallError. */
  async function requestCall(fields) {
    if (pending) throw new CallError("A call request is already on its way.", "pending");
    const live = panel.current();
    if (live && !TERMINAL.has(live.status)) throw new CallError(CALL_IN_PROGRESS, "call_in_progress");
    const number = normaliseNumber(fields.phoneNumber);
    if (!number) throw new CallError(INVALID_NUMBER, "invalid_number");
    const body = { to_number: String(fields.phoneNumber).trim() };
    const name = cleanText(fields.name, 80);
    const reason = cleanText(fields.reason, 300);
    const summary = cleanText(fields.summary, 2000);
    if (name) body.name = name;
    if (reason) body.reason = reason;
    if (summary) body.summary = summary;
    if (conversationId) body.conversation_id = conversationId;
    if (fields.at) body.at = String(fields.at);
    if (fields.retry) body.retry_on_no_answer = true;
    pending = (async () => {
      const session = await fetchJson("/api/call/session", { method: "GET" });
      if (!session || !session.token) throw new CallError("The call service did not open a session.", "no_token");
      const headers = {
        Accept: "application/json",
        "Content-Type": "application/json",
        "X-Callbridge-Token": session.token,
      };
      const human = await turnstileToken();
      if (human) headers["X-Turnstile-Token"] = human;
      const result = await fetchJson("/api/call/outbound", {
        method: "POST",
        headers,
        body: JSON.stringify(body),
      });
      if (!result || result.success === false) {
        const err = (result && result.error) || {};
        throw new CallError(err.message || "The call could not be requested.", err.code);
      }
      panel.follow({
        callId: result.call_id,
        to: shownNumber(fields.phoneNumber),
        status: result.status || "queued",
        scheduledFor: result.scheduled_for || null,
        cancelToken: result.cancel_token || null,
        retryWanted: Boolean(fields.retry),
      });
      return result;
    })();
    try {
      return await pending;
    } finally {
      pending = null;
    }
  }

  // ---------------------------------------------------------------- the client tool
  async function initiatePhoneCall(params) {
    const p = params || {};
    const raw = p.phoneNumber ?? p.phone_number ?? p.phone ?? p.to_number ?? "";
    console.log("[Widget] Initiating phone call to:", maskNumber(raw));
    try {
      const result = await requestCall({
        phoneNumber: raw, name: p.name, reason: p.reason, summary: p.summary,
        at: p.at, retry: p.retryIfMissed ?? p.retry_on_no_answer,
      });
      console.log("[Widget] Call initiated successfully:", result.call_sid || result.call_id);
      if (result.status === "scheduled") {
        return "Done: we'll call you on " + (result.to || maskNumber(raw)) + " at " +
          formatWhen(result.scheduled_for) + " (your time).";
      }
      return "Calling you now on " + (result.to || maskNumber(raw)) + ".";
    } catch (error) {
      const message = error instanceof CallError ? error.message : NETWORK_MESSAGE;
      console.warn("[Widget] Call request failed:", message);
      const offers = error instanceof CallError ? error.offers : [];
      if (offers.length) {
        // The agent reads these and may call the tool again with one of them as `at`.
        return message + " Times I can offer: " +
          offers.map((slot) => formatWhen(slot.utc) + " (" + slot.utc + ")").join("; ") + ".";
      }
      return message;
    }
  }

  function onWidgetCall(event) {
    const detail = event && event.detail;
    if (!detail || !detail.config || typeof detail.config !== "object") return;
    const config = detail.config;
    // Mutate the existing object (keeping its other tools and its identity) or create one.
    if (!config.clientTools || typeof config.clientTools !== "object") config.clientTools = {};
    config.clientTools.initiatePhoneCall = initiatePhoneCall;
    const previous = config.onConnect;
    if (!previous || !previous.__callbridge) {
      const wrapped = function (props) {
        rememberConversation(props && (props.conversationId || props.conversation_id));
        if (typeof previous === "function") return previous.apply(this, arguments);
        return undefined;
      };
      wrapped.__callbridge = true;
      config.onConnect = wrapped;
    }
  }

  // Listening on the document runs after listeners on the element itself, so tools the
  // host page assigns there are merged rather than overwritten.
  document.addEventListener("elevenlabs-convai:call", onWidgetCall);

  // ---------------------------------------------------------------- status panel
  const PANEL_CSS = `
    :host { all: initial; }
    .panel {
      position: fixed; left: 16px; bottom: 16px; z-index: 2147483000;
      box-sizing: border-box; width: min(320px, calc(100vw - 32px));
      display: flex; gap: 12px; align-items: flex-start;
      padding: 14px 14px 14px 16px; border-radius: 14px;
      background: #ffffff; color: #1b2330; border: 1px solid #e3e7ee;
      box-shadow: 0 10px 30px rgba(20, 30, 50, 0.14), 0 2px 6px rgba(20, 30, 50, 0.06);
      font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
      transform: translateY(0); opacity: 1; transition: opacity .2s ease, transform .2s ease;
    }
    .panel[hidden] { display: none; }
    :host([data-docked]) .panel { position: static; width: 100%; box-shadow: none; }
    .icon { flex: none; width: 34px; height: 34px; border-radius: 50%; display: grid; place-items: center;
      background: #eef2ff; color: #3d4fd6; }
    .icon svg { width: 18px; height: 18px; }
    .body { flex: 1; min-width: 0; }
    .title { margin: 0; font-size: 12px; color: #5d6878; letter-spacing: .02em; }
    .status { margin: 2px 0 0; font-size: 15px; font-weight: 600; color: #1b2330; }
    .detail { margin: 2px 0 0; font-size: 13px; color: #5d6878; }
    .detail:empty { display: none; }
    .close { flex: none; border: 0; background: transparent; color: #5d6878; cursor: pointer;
      width: 28px; height: 28px; border-radius: 8px; font: inherit; font-size: 18px; line-height: 1; }
    .close:hover { background: #f1f3f7; color: #1b2330; }
    .close:focus-visible, .cancel:focus-visible { outline: 2px solid #3d4fd6; outline-offset: 2px; }
    .cancel { margin-top: 8px; border: 1px solid #cfd5df; background: #fff; color: #1b2330; cursor: pointer;
      border-radius: 8px; padding: 4px 10px; font: inherit; font-size: 13px; }
    .cancel:hover { background: #f1f3f7; }
    .cancel[hidden] { display: none; }
    .panel[data-tone="active"] .icon { background: #e8f7ef; color: #177245; }
    .panel[data-tone="pending"] .icon { animation: pulse 1.4s ease-in-out infinite; }
    .panel[data-tone="bad"] .icon { background: #fdecec; color: #b42318; }
    .panel[data-tone="done"] .icon { background: #f1f3f7; color: #5d6878; }
    @keyframes pulse { 0%, 100% { box-shadow: 0 0 0 0 rgba(61, 79, 214, .35); } 50% { box-shadow: 0 0 0 7px rgba(61, 79, 214, 0); } }
    @media (prefers-reduced-motion: reduce) { .panel, .panel[data-tone="pending"] .icon { animation: none; transition: none; } }
    @media (max-width: 480px) { .panel { left: 8px; right: 8px; bottom: 72px; width: auto; } }
  `;
  const PHONE_ICON = '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M22 16.9v3a2 2 0 0 1-2.2 2 19.8 19.8 0 0 1-8.6-3.1 19.5 19.5 0 0 1-6-6A19.8 19.8 0 0 1 2.1 4.2 2 2 0 0 1 4.1 2h3a2 2 0 0 1 2 1.7c.1.9.4 1.8.7 2.7a2 2 0 0 1-.5 2.1L8 9.8a16 16 0 0 0 6 6l1.3-1.3a2 2 0 0 1 2.1-.4c.9.3 1.8.6 2.7.7a2 2 0 0 1 1.7 2z"/></svg>';

  function formatDuration(seconds) {
    const s = Math.max(0, Math.round(Number(seconds) || 0));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const r = String(s % 60).padStart(2, "0");
    return h ? h + ":" + String(m).padStart(2, "0") + ":" + r : m + ":" + r;
  }

  function describe(state) {
    switch (state.status) {
      case "scheduled":
        return {
          text: (state.retryOf ? "Missed you: we'll try again at " : "We'll call you at ") +
            formatWhen(state.scheduledFor) + " (your time)",
          tone: "pending",
        };
      case "missed":
        return { text: state.message || "We couldn't call at the time you asked", tone: "bad" };
      case "requested": case "queued": case "initiated":
        return { text: "Calling…", tone: "pending" };
      case "ringing":
        return { text: "Ringing", tone: "pending" };
      case "in-progress":
        return { text: "Connected", tone: "active" };
      case "completed":
        return { text: "Call ended (" + formatDuration(state.duration) + ")", tone: "done" };
      case "voicemail":
        return {
          text: state.messageLeft ? "Went to voicemail · we left a message" : "Went to voicemail",
          tone: "done",
        };
      case "no-answer": case "busy":
        // Twilio reports a declined call as busy or no-answer: one wording for all three.
        return { text: "They didn't pick up", tone: "bad" };
      case "canceled":
        return { text: state.message || "Call canceled", tone: "done" };
      case "agent_failed":
        return { text: state.message || "The call ended because of a technical problem", tone: "bad" };
      case "failed":
        return { text: state.message || "The call could not be completed", tone: "bad" };
      default:
        return { text: "Calling…", tone: "pending" };
    }
  }

  const panel = (() => {
    let host = null;
    let els = null;
    let state = null;
    let source = null;
    let pollTimer = null;
    let tickTimer = null;
    let reopenTimer = null;
    let reopenDelay = 1000;
    const listeners = [];
    const WIDE = window.matchMedia ? window.matchMedia("(min-width: 821px)") : null;

    /** On a wide screen the panel sits in the page's slot, if any, where it covers nothing. */
    function place() {
      if (!host) return;
      const slot = document.querySelector("[data-callbridge-status-slot]");
      const dock = slot && WIDE && WIDE.matches ? slot : null;
      const parent = dock || document.body || document.documentElement;
      if (host.parentNode !== parent) parent.appendChild(host);
      host.toggleAttribute("data-docked", !!dock);
    }
    if (WIDE && WIDE.addEventListener) WIDE.addEventListener("change", place);

    function save() {
      try {
        if (state) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(state));
        else sessionStorage.removeItem(STORAGE_KEY);
      } catch (_) { /* storage off */ }
    }

    function load() {
      try {
        const raw = sessionStorage.getItem(STORAGE_KEY);
        const value = raw ? JSON.parse(raw) : null;
        return value && value.callId && value.base === BASE ? value : null;
      } catch (_) {
        return null;
      }
    }

    function mount() {
      if (host) return;
      host = document.createElement("callbridge-status");
      host.setAttribute("data-callbridge-status", "");
      const root = host.attachShadow({ mode: "open" });
      if ("adoptedStyleSheets" in root && typeof CSSStyleSheet === "function") {
        const sheet = new CSSStyleSheet();
        sheet.replaceSync(PANEL_CSS);
        root.adoptedStyleSheets = [sheet];
      }
      const card = document.createElement("div");
      card.className = "panel";
      card.hidden = true;
      const icon = document.createElement("div");
      icon.className = "icon";
      icon.innerHTML = PHONE_ICON;
      const body = document.createElement("div");
      body.className = "body";
      body.setAttribute("role", "status");
      body.setAttribute("aria-live", "polite");
      body.setAttribute("aria-atomic", "true");
      const title = document.createElement("p");
      title.className = "title";
      const status = document.createElement("p");
      status.className = "status";
      status.setAttribute("data-callbridge-status-text", "");
      const detail = document.createElement("p");
      detail.className = "detail";
      const cancel = document.createElement("button");
      cancel.type = "button";
      cancel.className = "cancel";
      cancel.textContent = "Cancel";
      cancel.hidden = true;
      cancel.addEventListener("click", cancelScheduled);
      body.append(title, status, detail, cancel);
      const close = document.createElement("button");
      close.type = "button";
      close.className = "close";
      close.setAttribute("aria-label", "Hide call status");
      close.textContent = "×";
      close.addEventListener("click", dismiss);
      card.append(icon, body, close);
      root.append(card);
      els = { card, title, status, detail, cancel };
      place();
    }

    function render() {
      listeners.forEach((listener) => listener(state));
      if (!state) {
        if (els) els.card.hidden = true;
        return;
      }
      mount();
      const view = describe(state);
      els.card.hidden = false;
      els.card.dataset.tone = view.tone;
      els.card.dataset.status = state.status;
      els.title.textContent = state.to ? "Call to " + state.to : "Your call";
      if (els.status.textContent !== view.text) els.status.textContent = view.text;
      let detail = "";
      if (state.status === "in-progress" && state.answeredAt) {
        detail = formatDuration((Date.now() - state.answeredAt) / 1000);
      } else if (state.status === "ringing") {
        detail = "Pick up when your phone rings.";
      } else if (state.status === "scheduled") {
        detail = state.error || "";
      }
      els.cancel.hidden = !(state.status === "scheduled" && state.cancelToken);
      if (els.detail.textContent !== detail) els.detail.textContent = detail;
      host.dataset.status = state.status;
    }

    function stopFollowing() {
      if (source) { source.close(); source = null; }
      if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
      if (reopenTimer) { clearTimeout(reopenTimer); reopenTimer = null; }
      if (tickTimer) { clearInterval(tickTimer); tickTimer = null; }
    }

    function apply(update) {
      if (!state || !update) return;
      if (update.call_id && update.call_id !== state.callId) return;
      const status = update.status;
      if (!status || (TERMINAL.has(state.status) && !TERMINAL.has(status))) return;
      const changed = status !== state.status;
      state.status = status;
      if (update.duration !== undefined && update.duration !== null) state.duration = update.duration;
      if (update.failure && update.failure.message) state.message = update.failure.message;
      if (typeof update.message_left === "boolean") state.messageLeft = update.message_left;
      if (update.scheduled_for) state.scheduledFor = update.scheduled_for;
      if (update.retry && update.retry.call_id && update.retry.status === "scheduled" &&
          TERMINAL.has(status) && !state.retryOf) {
        // Follow the retry; the first call's capability also cancels its retries.
        follow({
          callId: update.retry.call_id,
          to: state.to,
          status: "scheduled",
          scheduledFor: update.retry.scheduled_for,
          cancelToken: state.cancelToken,
          cancelId: state.cancelId || state.callId,
          retryOf: state.callId,
        });
        return;
      }
      // The local clock, not the server's `at`: the two may disagree by minutes.
      if (status === "in-progress" && !state.answeredAt) state.answeredAt = Date.now();
      if (TERMINAL.has(status)) {
        if (!state.endedAt) state.endedAt = Date.now();
        if (state.duration === undefined || state.duration === null) {
          state.duration = state.answeredAt ? Math.round((Date.now() - state.answeredAt) / 1000) : 0;
        }
        stopFollowing();
        if ((status === "failed" || status === "agent_failed" || status === "canceled" || status === "missed") && !state.message) {
          poll(); // the stream carries no failure message; the call resource does
        }
        if ((status === "busy" || status === "no-answer") && state.retryWanted) {
          // The scheduler records the retry within one pass (seconds): look for it.
          for (const delay of [3000, 8000, 15000, 30000]) setTimeout(poll, delay);
        }
      } else if (status === "in-progress" && !tickTimer) {
        tickTimer = setInterval(render, 1000);
      }
      save();
      render();
      if (changed) host.dispatchEvent(new CustomEvent("callbridge:status", { detail: { status } }));
    }

    async function poll() {
      if (!state) return;
      try {
        const call = await fetchJson("/api/call/" + encodeURIComponent(state.callId), { method: "GET" });
        apply(call);
      } catch (error) {
        if (error instanceof CallError && error.status === 404) {
          stopFollowing();
          state = null;
          save();
          render();
        }
      }
    }

    function startPolling() {
      if (!pollTimer) pollTimer = setInterval(poll, POLL_MS);
    }

    function openStream() {
      if (!state || TERMINAL.has(state.status)) return;
      if (typeof EventSource !== "function") { startPolling(); return; }
      const es = new EventSource(api("/api/call/" + encodeURIComponent(state.callId) + "/events"));
      source = es;
      es.addEventListener("status", (event) => {
        let data = null;
        try { data = JSON.parse(event.data); } catch (_) { return; }
        apply(data);
      });
      es.addEventListener("open", () => {
        reopenDelay = 1000;
        if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
      });
      es.addEventListener("error", () => {
        if (source !== es) return;
        // The browser retries on its own while CONNECTING; catch up by polling meanwhile.
        poll();
        startPolling();
        if (es.readyState === EventSource.CLOSED) {
          source = null;
          reopenTimer = setTimeout(() => { reopenTimer = null; openStream(); }, reopenDelay);
          reopenDelay = Math.min(reopenDelay * 2, 30000);
        }
      });
    }

    async function cancelScheduled() {
      if (!state || state.status !== "scheduled" || !state.cancelToken) return;
      const callId = state.callId;
      els.cancel.disabled = true;
      try {
        await fetchJson("/api/call/" + encodeURIComponent(state.cancelId || callId) + "/cancel", {
          method: "POST",
          headers: { Accept: "application/json", "Content-Type": "application/json" },
          body: JSON.stringify({ cancel_token: state.cancelToken }),
        });
        apply({ call_id: callId, status: "canceled", failure: { message: "Call cancelled" } });
      } catch (error) {
        if (state) state.error = error instanceof CallError ? error.message : NETWORK_MESSAGE;
        poll(); // placed meanwhile? the call resource says so
        render();
      } finally {
        els.cancel.disabled = false;
      }
    }

    function follow(call) {
      stopFollowing();
      state = {
        base: BASE,
        callId: call.callId,
        to: call.to || "",
        status: call.status || "queued",
        scheduledFor: call.scheduledFor || null,
        cancelToken: call.cancelToken || null,
        cancelId: call.cancelId || null,
        retryOf: call.retryOf || null,
        retryWanted: Boolean(call.retryWanted),
        duration: null,
        answeredAt: null,
        message: "",
        messageLeft: false,
        startedAt: Date.now(),
        endedAt: null,
      };
      save();
      render();
      openStream();
    }

    function resume() {
      const saved = load();
      if (!saved) return;
      // A finished call is shown on the next pages for a while, then forgotten.
      if (TERMINAL.has(saved.status) && Date.now() - (saved.endedAt || 0) > SHOW_ENDED_MS) {
        try { sessionStorage.removeItem(STORAGE_KEY); } catch (_) { /* storage off */ }
        return;
      }
      state = saved;
      render();
      if (TERMINAL.has(state.status)) return;
      if (state.status === "in-progress") tickTimer = setInterval(render, 1000);
      poll();
      openStream();
    }

    function dismiss() {
      stopFollowing();
      state = null;
      save();
      render();
    }

    /** Call ``listener(state)`` whenever the panel changes (state is null when none). */
    function onChange(listener) {
      listeners.push(listener);
      listener(state);
    }

    return { follow, resume, dismiss, onChange, current: () => state };
  })();

  // ---------------------------------------------------------------- the form
  function enhanceForm(form) {
    if (form.dataset.callbridgeReady) return;
    form.dataset.callbridgeReady = "true";
    const phone = form.elements.namedItem("phone");
    const name = form.elements.namedItem("name");
    const reason = form.elements.namedItem("reason");
    const when = form.elements.namedItem("when");
    const retry = form.elements.namedItem("retry");
    const offersBox = form.querySelector("[data-callbridge-offers]");
    const errorBox = form.querySelector("[data-callbridge-error]");
    const successBox = form.querySelector("[data-callbridge-success]");
    const submit = form.querySelector('button[type="submit"], input[type="submit"]');
    const submitLabel = submit ? submit.textContent : "";
    let sending = false;
    let liveNote = null;

    /** While a call is live the form can't ask for another, and says why. */
    function syncLive(state) {
      const live = !!state && !TERMINAL.has(state.status);
      if (live && !liveNote) {
        liveNote = document.createElement("p");
        liveNote.className = "callbridge-live-note";
        liveNote.setAttribute("data-callbridge-live-note", "");
        liveNote.setAttribute("role", "status");
        if (submit) submit.insertAdjacentElement("afterend", liveNote);
        else form.appendChild(liveNote);
      }
      if (liveNote && live) liveNote.textContent = state.status === "scheduled" ? CALL_BOOKED : CALL_IN_PROGRESS;
      if (liveNote) liveNote.hidden = !live;
      if (submit && !sending) submit.disabled = live;
    }

    function showError(message, field) {
      if (errorBox) {
        errorBox.textContent = message;
        errorBox.hidden = false;
      }
      if (field) {
        field.setAttribute("aria-invalid", "true");
        const described = (field.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean);
        if (errorBox && errorBox.id && !described.includes(errorBox.id)) {
          described.push(errorBox.id);
          field.setAttribute("aria-describedby", described.join(" "));
        }
        field.focus();
      }
    }

    // "Call me later": the next few round times in the visitor's own clock. Quiet hours
    // are the callee's, so a choice may still be refused; the refusal offers times that fit.
    if (when && when.tagName === "SELECT" && when.options.length <= 1) {
      const now = new Date();
      const inAnHour = new Date(now.getTime() + 60 * 60 * 1000);
      inAnHour.setMinutes(inAnHour.getMinutes() < 30 ? 30 : 60, 0, 0);
      const slots = [inAnHour];
      for (const hour of [9, 14]) {
        const tomorrow = new Date(now);
        tomorrow.setDate(now.getDate() + 1);
        tomorrow.setHours(hour, 0, 0, 0);
        slots.push(tomorrow);
      }
      for (const slot of slots) {
        const option = document.createElement("option");
        option.value = slot.toISOString();
        option.textContent = "Later: " + formatWhen(slot.toISOString());
        when.append(option);
      }
    }

    function showOffers(offers, fields) {
      if (!offersBox) return;
      offersBox.replaceChildren();
      if (!offers.length) { offersBox.hidden = true; return; }
      const label = document.createElement("p");
      label.textContent = "We can call you at one of these times instead:";
      offersBox.append(label);
      for (const slot of offers) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "button button--offer";
        button.setAttribute("data-callbridge-offer", slot.utc);
        button.textContent = "Call me " + formatWhen(slot.utc) + " (your time)";
        button.addEventListener("click", () => send(Object.assign({}, fields, { at: slot.utc })));
        offersBox.append(button);
      }
      offersBox.hidden = false;
    }

    function clearMessages() {
      if (errorBox) { errorBox.hidden = true; errorBox.textContent = ""; }
      if (offersBox) { offersBox.hidden = true; offersBox.replaceChildren(); }
      if (successBox) { successBox.hidden = true; successBox.textContent = ""; }
      if (phone) phone.removeAttribute("aria-invalid");
    }

    if (phone) phone.addEventListener("input", () => {
      if (phone.getAttribute("aria-invalid") === "true" && normaliseNumber(phone.value)) {
        phone.removeAttribute("aria-invalid");
      }
    });

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearMessages();
      const raw = phone ? phone.value : "";
      if (!normaliseNumber(raw)) {
        showError(raw.trim() ? INVALID_NUMBER : "Please enter your phone number.", phone);
        return;
      }
      await send({
        phoneNumber: raw,
        name: name ? name.value : "",
        reason: reason ? reason.value : "",
        at: when && when.value ? when.value : null,
        retry: Boolean(retry && retry.checked),
      });
    });

    async function send(fields) {
      if (sending) return;
      clearMessages();
      sending = true;
      if (submit) {
        submit.disabled = true;
        submit.setAttribute("aria-busy", "true");
        submit.textContent = "Requesting your call…";
      }
      try {
        const result = await requestCall(fields);
        console.log("[Widget] Call initiated successfully:", result.call_sid || result.call_id);
        if (successBox) {
          successBox.textContent = result.status === "scheduled"
            ? "We'll call you on " + shownNumber(fields.phoneNumber) + " at " +
              formatWhen(result.scheduled_for) + " (your time). You can cancel it on the page."
            : "Calling you now on " + shownNumber(fields.phoneNumber) +
              ". You can keep browsing; the call's status stays on the page.";
          successBox.hidden = false;
        }
      } catch (error) {
        const message = error instanceof CallError ? error.message : NETWORK_MESSAGE;
        const aboutNumber = error instanceof CallError && error.code !== "quiet_hours" &&
          /number|phone|country/i.test(error.code + " " + message);
        showError(message, aboutNumber ? phone : null);
        if (error instanceof CallError) showOffers(error.offers, fields);
      } finally {
        sending = false;
        if (submit) {
          submit.removeAttribute("aria-busy");
          submit.textContent = submitLabel;
        }
        syncLive(panel.current());
      }
    }
    panel.onChange(syncLive);
  }

  // ---------------------------------------------------------------- start
  function start() {
    document.querySelectorAll("form[data-callbridge-form]").forEach(enhanceForm);
    panel.resume();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start, { once: true });
  else start();

  // A small, stable surface for host pages and tests.
  window.callbridge = Object.freeze({
    baseUrl: BASE,
    initiatePhoneCall,
    requestCall,
    status: () => (panel.current() ? Object.assign({}, panel.current(), { cancelToken: undefined }) : null),
    dismiss: () => panel.dismiss(),
    maskNumber,
  });
})();
