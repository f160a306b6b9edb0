// The bench's lean Node relay: what benchmarks/baseline_relay.py does, in Node with `ws`.
//
// One Twilio media stream in, one agent conversation out, per connection:
// wait for `start`, open the agent WebSocket, send the conversation initiation
// with the stream's customParameters, then pipe `media` payloads to the agent as
// `user_audio_chunk`, agent `audio` to the callee as `media`, `interruption` as
// `clear`, and answer `ping` with `pong`. The callee's `stop` or either side
// closing ends both. No compression, no keep-alive pings (as the Python relay).
//
// Usage: node relay.mjs --port 8200 --agent-url ws://127.0.0.1:8102/v1/convai/...
// `callbridge bench --compare-node` installs `ws` from package.json into a cache
// directory and runs this file from there (node_modules never enters the repo).

import { parseArgs } from "node:util";
import { WebSocket, WebSocketServer } from "ws";

const { values: args } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "8200" },
    "agent-url": { type: "string" },
  },
});
if (!args["agent-url"]) {
  console.error("relay.mjs: --agent-url is required (the agent's conversation ws:// URL)");
  process.exit(2);
}
const agentUrl = args["agent-url"];

function relay(twilio) {
  let agent = null;
  let streamSid = null;
  // Callee frames that arrive while the agent socket is still opening.
  const early = [];

  const closeBoth = () => {
    if (agent !== null && agent.readyState <= WebSocket.OPEN) agent.close();
    if (twilio.readyState <= WebSocket.OPEN) twilio.close();
  };

  const toAgent = (data) => {
    if (data.event === "media") {
      agent.send(JSON.stringify({ user_audio_chunk: data.media.payload }));
    } else if (data.event === "stop") {
      closeBoth();
    }
  };

  twilio.on("message", (raw) => {
    const data = JSON.parse(raw);
    if (agent === null) {
      if (data.event === "start") {
        streamSid = data.start.streamSid;
        openAgent(data.start.customParameters ?? {});
      } else if (data.event === "stop") {
        twilio.close();
      }
      return;
    }
    if (agent.readyState === WebSocket.CONNECTING) {
      early.push(data);
      return;
    }
    if (agent.readyState === WebSocket.OPEN) toAgent(data);
  });
  twilio.on("close", () => closeBoth());
  twilio.on("error", () => closeBoth());

  function openAgent(params) {
    agent = new WebSocket(agentUrl, { perMessageDeflate: false });
    agent.on("open", () => {
      agent.send(
        JSON.stringify({ type: "conversation_initiation_client_data", dynamic_variables: params }),
      );
      for (const data of early.splice(0)) toAgent(data);
    });
    agent.on("message", (raw) => {
      const data = JSON.parse(raw);
      const kind = data.type;
      if (kind === "audio") {
        const payload = data.audio_event.audio_base_64;
        twilio.send(JSON.stringify({ event: "media", streamSid, media: { payload } }));
      } else if (kind === "interruption") {
        twilio.send(JSON.stringify({ event: "clear", streamSid }));
      } else if (kind === "ping") {
        agent.send(JSON.stringify({ type: "pong", event_id: data.ping_event.event_id }));
      }
    });
    agent.on("close", () => closeBoth());
    agent.on("error", () => closeBoth());
  }
}

const server = new WebSocketServer({
  host: args.host,
  port: Number(args.port),
  perMessageDeflate: false,
});
server.on("connection", relay);

const stop = () => process.exit(0);
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
