"""The Twilio emulator: the Calls REST API, the call simulator, Media Streams, TwiML, and
Voice Dialing Permissions, as Twilio serves them (see :mod:`.emulator`)."""
