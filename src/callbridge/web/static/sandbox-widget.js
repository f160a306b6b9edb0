/*
 * Sandbox stand-in for the ElevenLabs widget.
 *
 * Registers the custom element `elevenlabs-convai` (only when nothing else did) and behaves
 * like the real widget on the points callbridge relies on: when the visitor starts a chat it
 * dispatches `elevenlabs-convai:call` (bubbles, composed, detail: {config}) and then uses
 * `config.clientTools` as listeners left it, calls `config.onConnect({conversationId})`, and
 * maps a tool's return value the way the ElevenLabs client does. The "agent" is a tiny
 * script: it asks for a number (and a name), then calls `initiatePhoneCall` and shows the
 * returned sentence as its reply. It is text only and says plainly that it is the sandbox.
 * The reason it passes on is a short phrase trimmed from the visitor's first message
 * (see `reasonFrom`), not the whole message.
 * When the reply offers times (a call asked for in the callee's quiet hours), it shows them
 * as buttons; one click calls the tool again with that time as `at`, as an agent would.
 */
(() => {
  "use strict";

  const TAG = "elevenlabs-convai";
  if (customElements.get(TAG)) return;

  const CSS = `
    :host { all: initial; }
    * { box-sizing: border-box; }
    .root { position: fixed; right: 16px; bottom: 16px; z-index: 2147482000;
      font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
      color: #1b2330; display: flex; flex-direction: column; align-items: flex-end; gap: 10px; }
    button { font: inherit; cursor: pointer; }
    button:focus-visible, input:focus-visible { outline: 2px solid #3d4fd6; outline-offset: 2px; }
    .launcher { display: inline-flex; align-items: center; gap: 10px; border: 0; border-radius: 999px;
      padding: 10px 16px 10px 10px; background: #1b2330; color: #fff;
      box-shadow: 0 10px 24px rgba(20, 30, 50, .22); }
    .launcher:hover { background: #2a3446; }
    .orb { width: 28px; height: 28px; border-radius: 50%;
      background: radial-gradient(circle at 30% 30%, #9fb1ff, #3d4fd6 60%, #26308a); }
    .launcher small { display: block; font-size: 11px; opacity: .7; }
    .launcher span { text-align: left; line-height: 1.2; }
    .chat { width: min(360px, calc(100vw - 32px)); height: min(500px, calc(100vh - 110px));
      display: flex; flex-direction: column; background: #fff; border: 1px solid #e3e7ee;
      border-radius: 16px; overflow: hidden; box-shadow: 0 18px 40px rgba(20, 30, 50, .18); }
    .chat[hidden] { display: none; }
    header { display: flex; align-items: center; gap: 10px; padding: 12px 12px 12px 14px;
      border-bottom: 1px solid #eef0f4; }
    header .who { flex: 1; min-width: 0; }
    header h2 { margin: 0; font-size: 15px; }
    .tag { display: inline-block; white-space: nowrap; margin-top: 2px; font-size: 11px; font-weight: 600; letter-spacing: .03em;
      color: #8a5a00; background: #fff4d6; border-radius: 6px; padding: 1px 6px; }
    .icon-btn { border: 0; background: transparent; border-radius: 8px; padding: 6px 8px; color: #5d6878; }
    .icon-btn:hover { background: #f1f3f7; color: #1b2330; }
    .log { flex: 1; overflow-y: auto; padding: 14px; display: flex; flex-direction: column; gap: 8px;
      background: #fafbfc; margin: 0; list-style: none; }
    .msg { max-width: 85%; padding: 8px 12px; border-radius: 14px; white-space: pre-wrap; overflow-wrap: anywhere; }
    .msg.agent { align-self: flex-start; background: #fff; border: 1px solid #e6e9ef; border-bottom-left-radius: 4px; }
    .msg.user { align-self: flex-end; background: #3d4fd6; color: #fff; border-bottom-right-radius: 4px; }
    .msg.note { align-self: center; background: transparent; color: #5d6878; font-size: 12px; padding: 2px; }
    .msg.typing { color: #5d6878; font-style: italic; }
    form { display: flex; gap: 8px; padding: 10px; border-top: 1px solid #eef0f4; background: #fff; }
    label.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
    input { flex: 1; min-width: 0; font: inherit; padding: 9px 12px; border: 1px solid #cfd5df; border-radius: 10px; color: #1b2330; }
    .send { border: 0; border-radius: 10px; padding: 0 14px; background: #3d4fd6; color: #fff; font-weight: 600; }
    .send:disabled { opacity: .5; cursor: default; }
    .offers { align-self: flex-start; display: flex; flex-direction: column; gap: 6px; }
    .offer { border: 1px solid #3d4fd6; background: #fff; color: #3d4fd6; border-radius: 10px; padding: 6px 10px; text-align: left; }
    .offer:hover { background: #eef2ff; }
    .start { margin: auto; border: 0; border-radius: 999px; padding: 10px 18px; background: #3d4fd6; color: #fff; font-weight: 600; }
    @media (max-width: 480px) { .root { right: 8px; bottom: 8px; } .chat { width: calc(100vw - 16px); } }
  `;

  const NUMBER_RE = /(\+|00)?[\d][\d\s().\-]{5,}\d/;
  const GREETING_RE = /^(hi|hello|hey|hiya|good (morning|afternoon|evening)|dear \w+)\b[\s,.!-]*/i;
  const LEAD_IN_RE = new RegExp(
    "^(?:(?:yes|so|well|ok|okay|um|please)[\\s,]+)*" +
    "(?:i(?:'d| would)? (?:like|want|wish|need|hope)(?: you)? to (?:talk|speak|ask|chat|know)(?: to \\w+)?" +
    "|i(?:'m| am) (?:calling|writing|asking|here)|i have (?:a |some )?(?:question|questions|problem|issue)s?" +
    "|(?:can|could) (?:you|someone|somebody) (?:call|ring) me(?: back)?|please call me(?: back)?" +
    "|call me(?: back)?|it(?:'s| is)|this is|i need help|(?:a )?question)" +
    "(?:\\s+(?:about|regarding|concerning|with|on|for|re))?[\\s:,-]*", "i");
  const REASON_WORDS = 8;

  /**
   * A short reason worth reading back, from the visitor's first message: greetings and
   * lead-ins ("Hi, I'd like to talk about …") dropped, the first sentence only, at most
   * eight words. The real agent's LLM writes a summary; this stand-in trims.
   */
  function reasonFrom(text) {
    let rest = String(text || "").replace(/\s+/g, " ").trim();
    for (let i = 0; i < 3; i += 1) {
      const before = rest;
      rest = rest.replace(GREETING_RE, "").replace(LEAD_IN_RE, "").trim();
      if (rest === before) break;
    }
    rest = rest.split(/[.!?;\n]/)[0].trim();
    const words = rest.split(" ").filter(Boolean);
    let reason = words.slice(0, REASON_WORDS).join(" ");
    if (words.length > REASON_WORDS) reason += "…";
    reason = reason.replace(/[\s,:;-]+$/, "");
    return reason.length >= 3 ? reason : "";
  }
  const SKIP_RE = /^(skip|no|nope|rather not|-)$/i;
  const OFFER_RE = /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?Z/g;

  /** Map a client tool's result to the text the agent receives, as the ElevenLabs client does. */
  function toolResultText(value) {
    if (value === undefined || value === null) return "Client tool execution successful.";
    if (typeof value === "object") {
      try { return JSON.stringify(value); } catch (_) { return String(value); }
    }
    return String(value);
  }

  let counter = 0;

  class SandboxConvai extends HTMLElement {
    constructor() {
      super();
      this.config = null;
      this.state = null;
      this.busy = false;
    }

    connectedCallback() {
      if (this.shadowRoot) return;
      const root = this.attachShadow({ mode: "open" });
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      root.adoptedStyleSheets = [sheet];
      root.innerHTML = `
        <div class="root">
          <section class="chat" hidden aria-label="Sandbox assistant chat">
            <header>
              <div class="orb" aria-hidden="true"></div>
              <div class="who">
                <h2>Assistant</h2>
                <span class="tag">Sandbox stand-in</span>
              </div>
              <button type="button" class="icon-btn" data-end>End chat</button>
              <button type="button" class="icon-btn" data-close aria-label="Minimise chat">—</button>
            </header>
            <ol class="log" role="log" aria-live="polite" aria-label="Conversation"></ol>
            <form data-form>
              <label class="sr" for="sandbox-convai-input">Message</label>
              <input id="sandbox-convai-input" type="text" autocomplete="off" maxlength="300"
                     placeholder="Type a message…">
              <button type="submit" class="send">Send</button>
            </form>
          </section>
          <button type="button" class="launcher" data-launch aria-expanded="false">
            <div class="orb" aria-hidden="true"></div>
            <span>Chat with us<small>Sandbox assistant</small></span>
          </button>
        </div>`;
      this.els = {
        chat: root.querySelector(".chat"),
        log: root.querySelector(".log"),
        form: root.querySelector("[data-form]"),
        input: root.querySelector("input"),
        send: root.querySelector(".send"),
        launch: root.querySelector("[data-launch]"),
      };
      this.els.launch.addEventListener("click", () => this.toggle());
      root.querySelector("[data-close]").addEventListener("click", () => this.toggle(false));
      root.querySelector("[data-end]").addEventListener("click", () => this.endSession());
      this.els.form.addEventListener("submit", (event) => {
        event.preventDefault();
        this.onUserText(this.els.input.value);
      });
    }

    toggle(open) {
      const show = open === undefined ? this.els.chat.hidden : open;
      this.els.chat.hidden = !show;
      this.els.launch.setAttribute("aria-expanded", String(show));
      if (show) {
        if (!this.state) this.startSession();
        this.els.input.focus();
      } else {
        this.els.launch.focus();
      }
    }

    /** Start a session the way the widget does: dispatch the call event, then use its config. */
    startSession() {
      const config = {
        agentId: this.getAttribute("agent-id") || "sandbox-agent",
        connectionType: "websocket",
        clientTools: {},
      };
      this.dispatchEvent(new CustomEvent("elevenlabs-convai:call", {
        bubbles: true,
        composed: true,
        detail: { config },
      }));
      this.config = config;
      counter += 1;
      const conversationId = "conv_sandbox_" + Date.now().toString(36) + counter;
      this.state = { phoneNumber: "", name: null, reason: "", stage: "need-number" };
      this.els.log.replaceChildren();
      this.say("note", "Sandbox chat: a local stand-in for the ElevenLabs widget, text only. Conversation " + conversationId);
      if (typeof config.onConnect === "function") {
        try { config.onConnect({ conversationId }); } catch (error) { console.warn("[Sandbox widget] onConnect failed:", error); }
      }
      this.say("agent", "Hi! I'm the sandbox assistant. I can have someone call you right now. " +
        "What number should we call? Please include the country code.");
    }

    endSession() {
      if (!this.state) return;
      this.state = null;
      this.config = null;
      this.say("note", "Chat ended.");
      this.els.send.disabled = false;
      this.toggle(false);
    }

    say(kind, text) {
      const item = document.createElement("li");
      item.className = "msg " + kind;
      item.textContent = text;
      this.els.log.append(item);
      this.els.log.scrollTop = this.els.log.scrollHeight;
      return item;
    }

    async onUserText(raw) {
      const text = String(raw || "").trim();
      if (!text || this.busy) return;
      if (!this.state) this.startSession();
      this.els.input.value = "";
      this.say("user", text);
      const st = this.state;
      if (st.stage === "need-number") {
        const match = text.match(NUMBER_RE);
        if (!match) {
          if (!st.reason) st.reason = reasonFrom(text);
          this.say("agent", "Happy to arrange a call about that. What number should we call?");
          return;
        }
        st.phoneNumber = match[0].trim();
        const rest = text.replace(match[0], " ").replace(/\s+/g, " ").trim();
        if (rest.length > 12 && !st.reason) st.reason = reasonFrom(rest);
        st.stage = "need-name";
        this.say("agent", "Thanks. And who should we ask for? (Type your name, or “skip”.)");
        return;
      }
      if (st.stage === "need-name") {
        st.name = SKIP_RE.test(text) ? "" : text;
        await this.callTool();
        return;
      }
      const again = text.match(NUMBER_RE);
      if (again) {
        st.phoneNumber = again[0].trim();
        await this.callTool();
        return;
      }
      this.say("agent", "If you'd like another call, just type the number.");
    }

    /** Show the times a reply offers as buttons; one click asks for the call at that time. */
    offerTimes(reply) {
      const times = Array.from(new Set(String(reply).match(OFFER_RE) || []));
      if (!times.length) return;
      const item = document.createElement("li");
      item.className = "offers";
      for (const iso of times) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "offer";
        button.setAttribute("data-offer", iso);
        button.textContent = "Call me " + new Date(iso).toLocaleString([], {
          weekday: "short", hour: "numeric", minute: "2-digit",
        });
        button.addEventListener("click", () => {
          if (this.busy || !this.state) return;
          item.remove();
          this.say("user", button.textContent);
          this.callTool(iso);
        });
        item.append(button);
      }
      this.els.log.append(item);
      this.els.log.scrollTop = this.els.log.scrollHeight;
    }

    async callTool(at) {
      const st = this.state;
      const tools = (this.config && this.config.clientTools) || {};
      const tool = tools.initiatePhoneCall;
      this.busy = true;
      this.els.send.disabled = true;
      const typing = this.say("agent typing", "…");
      let reply;
      if (typeof tool !== "function") {
        reply = "Client tool with name initiatePhoneCall is not defined on client";
      } else {
        const params = { phoneNumber: st.phoneNumber };
        if (st.name) params.name = st.name;
        if (st.reason) params.reason = st.reason;
        if (at) params.at = at;
        try {
          reply = toolResultText(await tool(params));
        } catch (error) {
          reply = "Client tool execution failed: " + (error && error.message ? error.message : String(error));
        }
      }
      typing.remove();
      this.busy = false;
      this.els.send.disabled = false;
      st.stage = "done";
      this.say("agent", reply);
      this.offerTimes(reply);
      if (this.els.chat && !this.els.chat.hidden) this.els.input.focus();
    }
  }

  customElements.define(TAG, SandboxConvai);
})();
