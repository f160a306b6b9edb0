"""Adapters: the ports of :mod:`callbridge.ports` implemented with Twilio, ElevenLabs,
SQLAlchemy, Redis and webhooks. They never import :mod:`callbridge.services`."""
