/*
 * The sandbox phone: a pretend telephone on the Twilio emulator's phone hub.
 *
 * WebSocket /sandbox/twilio/phone/ws, JSON text frames.
 *   server → page: ring {call_sid, from, to}, say {text}, caption {role, text, event_id}, media {payload},
 *                  clear, status {status}, ended {status, duration}
 *   (caption: the agent's words as it starts saying them, role "agent", and the demo
 *   agent's stand-in transcript of what the callee said, role "user"; sandbox only; an
 *   interrupted response comes again with its event_id, cut to what was heard)
 *   server → page also: beep (the answering machine's, after "Let it go to voicemail")
 *   page → server: answer, voicemail, decline, hangup, dtmf {digit},
 *                  media {payload: 160-byte μ-law}
 *
 * "Let it go to voicemail" answers as an answering machine: the page plays the
 * machine's recorded greeting and its beep (GET /sandbox/twilio/phone/greeting.wav,
 * made by the emulator), and the line's audio after the beep is what gets recorded.
 *
 * Once answered, the microphone goes out as 20 ms μ-law frames (AudioWorklet in
 * phone-worklet.js) and the caller side's audio is decoded, resampled to the context rate
 * and scheduled back to back. `window.__phone` exposes counters for tests.
 */
(() => {
  "use strict";

  const FRAME_BYTES = 160;
  const LINE_RATE = 8000;
  const JITTER_S = 0.06;
  const SILENCE_THRESHOLD = 256; // |PCM16| above this counts as "not silent"

  const $ = (sel) => document.querySelector(sel);
  const ui = {
    lineDot: $("[data-phone-line-dot]"),
    lineText: $("[data-phone-line-text]"),
    screen: $("[data-phone-screen]"),
    state: $("[data-phone-state]"),
    parties: $("[data-phone-parties]"),
    from: $("[data-phone-from]"),
    to: $("[data-phone-to]"),
    timer: $("[data-phone-timer]"),
    meter: $("[data-phone-meter]"),
    meterBar: $("[data-phone-meter-bar]"),
    note: $("[data-phone-note]"),
    answer: $("[data-phone-answer]"),
    voicemail: $("[data-phone-voicemail]"),
    decline: $("[data-phone-decline]"),
    hangup: $("[data-phone-hangup]"),
    keys: Array.from(document.querySelectorAll("[data-digit]")),
    captions: $("[data-phone-captions]"),
    captionsEmpty: $("[data-phone-captions-empty]"),
    sound: $("[data-phone-sound]"),
    soundButton: $("[data-phone-sound-button]"),
  };

  const phone = {
    state: "connecting",
    callSid: null,
    receivedFrames: 0,
    nonSilentSamples: 0,
    sentFrames: 0,
    dtmfSent: [],
    captions: [],
    lastStatus: null,
    micError: null,
    level: 0,
    turns: [],
    ringBursts: 0,
    soundAllowed: false,
    voicemail: null, // {greetingPlayed, serverBeep} once it went to voicemail
  };
  window.__phone = phone;

  // ------------------------------------------------------------------ μ-law
  const DECODE = new Int16Array(256);
  for (let i = 0; i < 256; i += 1) {
    const b = ~i & 0xff;
    const sign = b & 0x80;
    const exponent = (b >> 4) & 0x07;
    const mantissa = b & 0x0f;
    const magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    DECODE[i] = sign ? -magnitude : magnitude;
  }

  function base64ToBytes(text) {
    const bin = atob(text);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i += 1) out[i] = bin.charCodeAt(i);
    return out;
  }

  function bytesToBase64(bytes) {
    let bin = "";
    for (let i = 0; i < bytes.length; i += 1) bin += String.fromCharCode(bytes[i]);
    return btoa(bin);
  }

  // ------------------------------------------------------------------ socket
  let socket = null;
  let retryDelay = 500;

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(scheme + "//" + location.host + "/sandbox/twilio/phone/ws");
    socket = ws;
    ws.addEventListener("open", () => {
      retryDelay = 500;
      setLine("online", "On the line · this phone rings for sandbox calls");
      if (phone.state === "connecting") setState("idle");
    });
    ws.addEventListener("message", (event) => {
      let msg;
      try { msg = JSON.parse(event.data); } catch (_) { return; }
      if (msg && typeof msg.type === "string") handle(msg);
    });
    ws.addEventListener("close", () => {
      if (socket !== ws) return;
      socket = null;
      setLine("offline", "Line disconnected · reconnecting…");
      if (phone.state !== "idle" && phone.state !== "connecting") endCall("Line lost", null);
      phone.state = "connecting";
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 8000);
    });
  }

  function setLine(kind, text) {
    ui.lineDot.dataset.kind = kind;
    ui.lineText.textContent = text;
  }

  // ------------------------------------------------------------------ call states
  const STATUS_TEXT = {
    queued: "Call queued",
    initiated: "Dialling…",
    ringing: "Ringing",
    "in-progress": "Connected",
    completed: "Call ended",
    busy: "Busy",
    "no-answer": "No answer",
    canceled: "Call canceled",
    failed: "Call failed",
  };

  let timerInterval = null;
  let answeredAt = 0;

  function formatDuration(seconds) {
    const s = Math.max(0, Math.round(Number(seconds) || 0));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function setState(state, text) {
    phone.state = state;
    ui.screen.dataset.state = state;
    const label = text || {
      idle: "Waiting for a call",
      ringing: "Incoming call",
      answering: "Answering…",
      "in-call": "Connected",
      voicemail: "Voicemail",
      ended: "Call ended",
    }[state] || state;
    ui.state.textContent = label;
    ui.answer.hidden = state !== "ringing";
    ui.voicemail.hidden = state !== "ringing";
    ui.decline.hidden = state !== "ringing";
    ui.hangup.hidden = !(state === "in-call" || state === "answering" || state === "voicemail");
    const inCall = state === "in-call";
    ui.keys.forEach((key) => { key.disabled = !inCall; });
    ui.timer.hidden = !(inCall || state === "ended");
  }

  function handle(msg) {
    switch (msg.type) {
      case "ring": return onRing(msg);
      case "say": return addCaption(String(msg.text || ""), "line");
      case "caption": return addCaption(String(msg.text || ""), msg.role === "user" ? "user" : "agent", msg.event_id);
      case "media": return onMedia(msg.payload);
      case "clear": return playback.clear();
      case "status": return onStatus(String(msg.status || ""));
      case "beep": if (phone.voicemail) phone.voicemail.serverBeep = true; return undefined;
      case "ended": return onEnded(msg);
      default: return undefined;
    }
  }

  function onRing(msg) {
    if (phone.state === "in-call" || phone.state === "answering" || phone.state === "voicemail") return;
    phone.voicemail = null;
    phone.callSid = msg.call_sid || null;
    declined = false;
    phone.lastStatus = "ringing";
    ui.captions.replaceChildren();
    phone.captions.length = 0;
    phone.turns.length = 0;
    turnItems.clear();
    ui.captionsEmpty.hidden = false;
    ui.from.textContent = msg.from || "Unknown";
    ui.to.textContent = msg.to || "";
    ui.parties.hidden = false;
    ui.note.hidden = true;
    ui.timer.textContent = "0:00";
    setState("ringing");
    ringer.start();
    ui.answer.focus();
    document.title = "Incoming call · Sandbox phone";
  }

  function onStatus(status) {
    phone.lastStatus = status;
    if (phone.state === "in-call" || phone.state === "answering" || phone.state === "voicemail") {
      if (status === "in-progress") return;
    }
    if (phone.state === "ringing" && status === "ringing") return;
    if (phone.state !== "idle" && STATUS_TEXT[status] && phone.state !== "ended") {
      ui.note.textContent = "Line status: " + STATUS_TEXT[status];
      ui.note.hidden = false;
    }
  }

  function onEnded(msg) {
    const status = String(msg.status || "completed");
    phone.lastStatus = status;
    if (phone.state === "ended" && declined) return; // our own Decline already said so
    let text = STATUS_TEXT[status] || "Call ended";
    if (status === "completed") text = "Call ended (" + formatDuration(msg.duration) + ")";
    endCall(text, msg.duration);
  }

  function endCall(text, duration) {
    ringer.stop();
    media.stop();
    playback.stop();
    if (timerInterval) { clearInterval(timerInterval); timerInterval = null; }
    if (duration !== null && duration !== undefined) ui.timer.textContent = formatDuration(duration);
    setState("ended", text);
    document.title = "Sandbox phone";
    meter(0);
  }

  async function answer() {
    if (phone.state !== "ringing") return;
    ringer.stop();
    setState("answering");
    try {
      await playback.start();
      await media.start();
    } catch (error) {
      phone.micError = String(error && error.message ? error.message : error);
      ui.note.textContent = "Microphone unavailable (" + phone.micError + "): sending silence.";
      ui.note.hidden = false;
      media.startSilence();
    }
    if (phone.state !== "answering") { media.stop(); return; }
    send({ type: "answer" });
    answeredAt = Date.now();
    setState("in-call");
    ui.hangup.focus();
    timerInterval = setInterval(() => {
      ui.timer.textContent = formatDuration((Date.now() - answeredAt) / 1000);
    }, 500);
  }

  async function letItGoToVoicemail() {
    if (phone.state !== "ringing") return;
    ringer.stop();
    phone.voicemail = { greetingPlayed: false, serverBeep: false };
    setState("voicemail", "Voicemail: playing the greeting");
    await playback.start();
    send({ type: "voicemail" });
    answeredAt = Date.now();
    ui.hangup.focus();
    timerInterval = setInterval(() => {
      ui.timer.textContent = formatDuration((Date.now() - answeredAt) / 1000);
    }, 500);
    try {
      const response = await fetch("/sandbox/twilio/phone/greeting.wav", { cache: "no-store" });
      if (!response.ok) throw new Error("greeting " + response.status);
      const ctx = await audioContext();
      const recording = await ctx.decodeAudioData(await response.arrayBuffer());
      const node = ctx.createBufferSource();
      node.buffer = recording;
      node.connect(ctx.destination);
      node.addEventListener("ended", () => {
        if (!phone.voicemail) return;
        phone.voicemail.greetingPlayed = true; // the recording ends with its beep
        if (phone.state === "voicemail") ui.state.textContent = "Voicemail: recording after the beep";
      });
      node.start();
    } catch (error) {
      ui.note.textContent = "The greeting could not be played (" + String(error && error.message ? error.message : error) + ").";
      ui.note.hidden = false;
    }
  }

  let declined = false;

  function decline() {
    if (phone.state !== "ringing") return;
    declined = true;
    send({ type: "decline" });
    endCall("Declined", null);
  }

  function hangup() {
    if (phone.state !== "in-call" && phone.state !== "answering" && phone.state !== "voicemail") return;
    send({ type: "hangup" });
    endCall("You hung up", (Date.now() - answeredAt) / 1000);
  }

  function pressKey(digit) {
    if (phone.state !== "in-call") return;
    if (send({ type: "dtmf", digit })) phone.dtmfSent.push(digit);
    playback.tone(digit);
  }

  const CAPTION_WHO = { agent: "Agent: ", user: "You (stand-in transcript): " };

  const turnItems = new Map(); // event_id → [caption item, turn], to correct a cut-off one

  function addCaption(text, role, eventId) {
    if (!text) return;
    const known = eventId !== undefined ? turnItems.get(role + ":" + eventId) : undefined;
    if (known) {
      known[0].lastChild.textContent = text;
      known[1].text = text;
      return;
    }
    phone.captions.push(text);
    const turn = { role, text };
    if (role !== "line") phone.turns.push(turn);
    const item = document.createElement("li");
    item.dataset.role = role;
    if (CAPTION_WHO[role]) {
      const who = document.createElement("span");
      who.className = "captions__who";
      who.textContent = CAPTION_WHO[role];
      item.append(who);
    }
    item.append(document.createTextNode(text));
    if (eventId !== undefined) turnItems.set(role + ":" + eventId, [item, turn]);
    ui.captions.append(item);
    ui.captionsEmpty.hidden = true;
    item.scrollIntoView({ block: "nearest" });
  }

  function meter(level) {
    phone.level = level;
    const pct = Math.round(Math.min(1, level) * 100);
    ui.meterBar.style.transform = "scaleX(" + (pct / 100).toFixed(3) + ")";
    ui.meter.setAttribute("aria-valuenow", String(pct));
  }

  // The meter falls back to zero when no audio arrives (between the agent's words).
  let lastMediaAt = 0;
  setInterval(() => {
    if (phone.level > 0 && performance.now() - lastMediaAt > 150) {
      meter(phone.level < 0.02 ? 0 : phone.level * 0.5);
    }
  }, 100);

  // ------------------------------------------------------------------ audio context
  let context = null;

  // Browsers start a page's audio suspended until the visitor clicks on it once: until
  // then a visible button says so, and that one click lets the ring be heard.
  function showSound() {
    const running = !!context && context.state === "running";
    phone.soundAllowed = running;
    ui.sound.hidden = running;
  }

  async function audioContext() {
    if (!context || context.state === "closed") {
      context = new AudioContext({ latencyHint: "interactive" });
      context.addEventListener("statechange", showSound);
    }
    if (context.state === "suspended") {
      try { await context.resume(); } catch (_) { /* resumes on the next gesture */ }
    }
    return context;
  }

  // ------------------------------------------------------------------ ringing tone
  const ringer = (() => {
    let timer = null;
    function burst() {
      if (!context || context.state !== "running") return;
      phone.ringBursts += 1;
      const now = context.currentTime;
      const gain = context.createGain();
      gain.gain.setValueAtTime(0.0001, now);
      gain.gain.exponentialRampToValueAtTime(0.08, now + 0.05);
      gain.gain.setValueAtTime(0.08, now + 1.2);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + 1.3);
      gain.connect(context.destination);
      [440, 480].forEach((freq) => {
        const osc = context.createOscillator();
        osc.frequency.value = freq;
        osc.connect(gain);
        osc.start(now);
        osc.stop(now + 1.32);
      });
    }
    return {
      start() {
        if (timer) return;
        audioContext().then(burst, () => undefined);
        timer = setInterval(burst, 3000);
        // Chrome logs an error for vibrate() before the visitor has touched the page.
        const active = navigator.userActivation ? navigator.userActivation.hasBeenActive : false;
        if (navigator.vibrate && active) navigator.vibrate([400, 200, 400]);
      },
      stop() {
        if (timer) { clearInterval(timer); timer = null; }
      },
      ringing: () => timer !== null,
      burst,
    };
  })();

  async function allowSound() {
    await audioContext();
    showSound();
    if (ringer.ringing()) ringer.burst();
  }

  // ------------------------------------------------------------------ playback
  const playback = (() => {
    let playHead = 0;
    let output = null;
    const live = new Set();

    function upsample(pcm, rate) {
      const ratio = rate / LINE_RATE;
      const n = Math.round(pcm.length * ratio);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i += 1) {
        const pos = i / ratio;
        const j = Math.floor(pos);
        const frac = pos - j;
        const a = pcm[j] / 32768;
        const b = (j + 1 < pcm.length ? pcm[j + 1] : pcm[j]) / 32768;
        out[i] = a + (b - a) * frac;
      }
      return out;
    }

    return {
      async start() {
        const ctx = await audioContext();
        output = ctx.createGain();
        output.gain.value = 1;
        output.connect(ctx.destination);
        playHead = 0;
      },
      play(pcm) {
        if (!context || !output) return;
        const samples = upsample(pcm, context.sampleRate);
        const buffer = context.createBuffer(1, samples.length, context.sampleRate);
        buffer.copyToChannel(samples, 0);
        const node = context.createBufferSource();
        node.buffer = buffer;
        node.connect(output);
        const now = context.currentTime;
        if (playHead < now + 0.005) playHead = now + JITTER_S;
        node.start(playHead);
        playHead += buffer.duration;
        live.add(node);
        node.addEventListener("ended", () => live.delete(node));
      },
      clear() {
        live.forEach((node) => { try { node.stop(); } catch (_) { /* already stopped */ } });
        live.clear();
        playHead = 0;
      },
      stop() {
        this.clear();
        if (output) { output.disconnect(); output = null; }
      },
      tone(digit) {
        const pairs = {
          1: [697, 1209], 2: [697, 1336], 3: [697, 1477], 4: [770, 1209], 5: [770, 1336],
          6: [770, 1477], 7: [852, 1209], 8: [852, 1336], 9: [852, 1477], "*": [941, 1209],
          0: [941, 1336], "#": [941, 1477],
        };
        const freqs = pairs[digit];
        if (!context || !freqs) return;
        const now = context.currentTime;
        const gain = context.createGain();
        gain.gain.value = 0.05;
        gain.connect(context.destination);
        freqs.forEach((f) => {
          const osc = context.createOscillator();
          osc.frequency.value = f;
          osc.connect(gain);
          osc.start(now);
          osc.stop(now + 0.12);
        });
      },
    };
  })();

  function onMedia(payload) {
    const live = phone.state === "in-call" || phone.state === "answering" || phone.state === "voicemail";
    if (typeof payload !== "string" || !live) return;
    let bytes;
    try { bytes = base64ToBytes(payload); } catch (_) { return; }
    const pcm = new Int16Array(bytes.length);
    let energy = 0;
    for (let i = 0; i < bytes.length; i += 1) {
      const v = DECODE[bytes[i]];
      pcm[i] = v;
      energy += v * v;
      if (v > SILENCE_THRESHOLD || v < -SILENCE_THRESHOLD) phone.nonSilentSamples += 1;
    }
    phone.receivedFrames += 1;
    lastMediaAt = performance.now();
    const rms = bytes.length ? Math.sqrt(energy / bytes.length) / 32768 : 0;
    const level = Math.min(1, rms * 4) * 0.6 + phone.level * 0.4;
    meter(level < 0.005 ? 0 : level);
    playback.play(pcm);
  }

  // ------------------------------------------------------------------ microphone out
  const media = (() => {
    let stream = null;
    let node = null;
    let sourceNode = null;
    let sink = null;
    let silenceTimer = null;

    function sendFrame(buffer) {
      if (phone.state !== "in-call") return;
      const bytes = new Uint8Array(buffer);
      if (bytes.length !== FRAME_BYTES) return;
      if (send({ type: "media", payload: bytesToBase64(bytes) })) phone.sentFrames += 1;
    }

    return {
      async start() {
        if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
          throw new Error("no microphone API on this page");
        }
        const ctx = await audioContext();
        stream = await navigator.mediaDevices.getUserMedia({
          audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
        });
        await ctx.audioWorklet.addModule("/static/phone-worklet.js");
        sourceNode = ctx.createMediaStreamSource(stream);
        node = new AudioWorkletNode(ctx, "callbridge-capture", { numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1 });
        node.port.onmessage = (event) => sendFrame(event.data);
        // Keep the node pulled by the graph without making the microphone audible.
        sink = ctx.createGain();
        sink.gain.value = 0;
        sourceNode.connect(node);
        node.connect(sink);
        sink.connect(ctx.destination);
      },
      startSilence() {
        const frame = new Uint8Array(FRAME_BYTES).fill(0xff);
        silenceTimer = setInterval(() => sendFrame(frame.buffer), 20);
      },
      stop() {
        if (silenceTimer) { clearInterval(silenceTimer); silenceTimer = null; }
        if (node) { node.port.onmessage = null; node.disconnect(); node = null; }
        if (sourceNode) { sourceNode.disconnect(); sourceNode = null; }
        if (sink) { sink.disconnect(); sink = null; }
        if (stream) { stream.getTracks().forEach((t) => t.stop()); stream = null; }
      },
    };
  })();

  // ------------------------------------------------------------------ wiring
  ui.soundButton.addEventListener("click", allowSound);
  ui.answer.addEventListener("click", answer);
  ui.voicemail.addEventListener("click", letItGoToVoicemail);
  ui.decline.addEventListener("click", decline);
  ui.hangup.addEventListener("click", hangup);
  ui.keys.forEach((key) => key.addEventListener("click", () => pressKey(key.dataset.digit)));
  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    if (phone.state !== "in-call") return;
    if (event.target && /^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName)) return;
    if (/^[0-9*#]$/.test(event.key)) {
      event.preventDefault();
      pressKey(event.key);
    }
  });
  window.addEventListener("pagehide", () => {
    if (phone.state === "in-call") send({ type: "hangup" });
  });

  setState("connecting", "Waiting for a call");
  meter(0);
  // Created now (suspended until a click, unless the browser allows autoplay); resume()
  // may not settle before a click, so the button is shown without waiting for it.
  audioContext();
  showSound();
  connect();
})();
