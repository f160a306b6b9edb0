"""The ElevenLabs emulator: the Agents conversation socket, signed URLs, the Conversations
API, the demo agent and its voice, and the post-call webhook (see :mod:`.emulator`)."""
