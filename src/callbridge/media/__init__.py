"""Media: sans-I/O codecs for Twilio Media Streams and the agent socket, μ-law/PCM,
resampling and pacing arithmetic. Pure: no I/O library."""
