"""The sandbox: protocol-faithful local emulators of Twilio and ElevenLabs, beside the product.

- :mod:`.twilio` — the Calls REST API, the call simulator, the Media Streams client, the
  TwiML executor and Voice Dialing Permissions (:class:`.twilio.emulator.TwilioEmulator`).
- :mod:`.elevenlabs` — the Agents conversation socket and signed URLs, the demo agent and
  its voice, the Conversations API and the post-call webhook
  (:class:`.elevenlabs.emulator.ElevenLabsEmulator`).
- :mod:`.callee` — the scripted callee (``CALLBRIDGE_SANDBOX_CALLEE``) and its audio.
- :mod:`.standalone` — ``callbridge sandbox``: both emulators alone, for another server.

They implement none of callbridge's ports: the production adapters talk to them over real
HTTP and WebSocket. Only :mod:`callbridge.bootstrap` (in sandbox mode) and the CLI's
``demo`` and ``sandbox`` commands import this package (an import contract in
``pyproject.toml``), and it imports nothing above ``adapters/``.
"""

#: The agent id the sandbox's ElevenLabs emulator answers to unless one is configured.
SANDBOX_AGENT_ID = "agent_sandbox_demo"
