"""The sandbox: protocol-faithful local emulators of Twilio and ElevenLabs."""

#: The agent id the sandbox's ElevenLabs emulator answers to unless one is configured.
SANDBOX_AGENT_ID = "agent_sandbox_demo"
