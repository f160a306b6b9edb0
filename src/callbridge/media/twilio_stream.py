"""Sans-I/O codec for Twilio Media Streams (bidirectional ``<Connect><Stream>``).

Implements the message set of https://www.twilio.com/docs/voice/media-streams/websocket-messages
(protocols.md §3.2–3.4): Twilio sends ``connected``, ``start``, then ``media``
interleaved with ``dtmf`` and ``mark`` echoes, and ``stop`` last; the server may
send ``media``, ``mark`` and ``clear``, all carrying the ``streamSid`` from
``start``.

The codec does no I/O: :meth:`TwilioStreamCodec.decode` takes one text frame and
returns typed events, and the encoders return the text frame to send. The only
error it raises on purpose is :class:`~callbridge.errors.ProtocolError`.

Hot path: inbound ``media`` keeps the base64 payload as the received string (no
base64 decode), and outbound ``media`` is three string concatenations around a
pre-built prefix, since base64 never needs JSON escaping.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import orjson

from callbridge.errors import ProtocolError
from callbridge.media import _wire
from callbridge.media.frames import (
    CallerAudio,
    CallerDtmf,
    MarkPlayed,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    TwilioEvent,
)

__all__ = ["TwilioStreamCodec"]

_WHERE = "twilio stream"


class TwilioStreamCodec:
    """One Media Stream, seen from our server.

    Decoding is strict about what the bridge relies on (``start`` before any
    stream message, a matching ``streamSid``, the fields it reads) and ignores
    fields it does not read, so Twilio may add more.

    Attributes:
        started: the ``start`` event, once received.
    """

    def __init__(self) -> None:
        self.started: StreamStarted | None = None
        self._media_prefix = ""
        self._mark_prefix = ""
        self._clear = ""

    @property
    def stream_sid(self) -> str | None:
        """The ``streamSid`` from ``start``, or ``None`` before it."""
        return self.started.stream_sid if self.started is not None else None

    # --- decoding ---------------------------------------------------------------------

    def decode(self, message: str | bytes) -> list[TwilioEvent]:
        """Decode one text frame from Twilio.

        Args:
            message: the frame as received (``bytes`` must be UTF-8 JSON).

        Returns:
            The events it carries (one per Twilio message).

        Raises:
            ProtocolError: non-JSON or binary data, an unknown ``event``, a
                missing or ill-typed field, a stream message before ``start``,
                or a ``streamSid`` other than the one ``start`` announced.
        """
        return self._decode_data(_wire.load_object(message, _WHERE))

    def _decode_data(self, data: dict[str, Any]) -> list[TwilioEvent]:
        event = data.get("event")
        if event == "media":
            fast = self._fast_media(data)
            if fast is not None:
                return [fast]
            self._check_sid(data)
            media = _wire.obj(data, "media", "media")
            payload = _wire.text(media, "payload", "media")
            return [
                CallerAudio(
                    payload,
                    _wire.integer(media, "chunk", "media"),
                    _wire.integer(media, "timestamp", "media"),
                )
            ]
        if event == "connected":
            return [
                StreamConnected(
                    _wire.opt_text(data, "protocol", "connected", "Call") or "Call",
                    _wire.opt_text(data, "version", "connected", "1.0.0") or "1.0.0",
                )
            ]
        if event == "start":
            return [self._decode_start(data)]
        if event == "mark":
            self._check_sid(data)
            return [MarkPlayed(_wire.text(_wire.obj(data, "mark", "mark"), "name", "mark"))]
        if event == "dtmf":
            self._check_sid(data)
            digit = _wire.text(_wire.obj(data, "dtmf", "dtmf"), "digit", "dtmf")
            if len(digit) != 1:
                raise ProtocolError("dtmf: 'digit' must be one character")
            return [CallerDtmf(digit)]
        if event == "stop":
            self._check_sid(data)
            stop = data.get("stop")
            call_sid = _wire.opt_text(stop, "callSid", "stop") if isinstance(stop, dict) else None
            return [StreamStopped(call_sid)]
        raise ProtocolError(f"{_WHERE}: unknown event {str(event)[:40]!r}")

    def decode_hot(self, message: str | bytes) -> str | list[TwilioEvent]:
        """:meth:`decode` for the hot path: a well-formed ``media`` is just its payload.

        Returns:
            The base64 payload of a ``media`` message that passes :meth:`decode`'s
            checks, with no event built around it; any other message's events,
            exactly as :meth:`decode` returns them.

        Raises:
            ProtocolError: as :meth:`decode`.
        """
        data = _wire.load_object(message, _WHERE)
        if data.get("event") == "media":
            payload = self._fast_payload(data)
            if payload is not None:
                return payload
        return self._decode_data(data)

    def _fast_media(self, data: dict[str, Any]) -> CallerAudio | None:
        """The well-formed common case in a few type checks; ``None`` → checked path."""
        payload = self._fast_payload(data)
        if payload is None:
            return None
        media = data["media"]
        return CallerAudio(payload, int(media["chunk"]), int(media["timestamp"]))

    def _fast_payload(self, data: dict[str, Any]) -> str | None:
        """A well-formed ``media``'s payload (chunk and timestamp checked, not converted)."""
        media = data.get("media")
        started = self.started
        if type(media) is not dict or started is None:
            return None
        if data.get("streamSid", started.stream_sid) != started.stream_sid:
            return None
        payload, chunk, stamp = media.get("payload"), media.get("chunk"), media.get("timestamp")
        if (
            type(payload) is str
            and type(chunk) is str
            and type(stamp) is str
            and 0 < len(chunk) < 20
            and 0 < len(stamp) < 20
            and chunk.isascii()
            and chunk.isdigit()
            and stamp.isascii()
            and stamp.isdigit()
        ):
            return payload
        return None

    def _decode_start(self, data: dict[str, Any]) -> StreamStarted:
        if self.started is not None:
            raise ProtocolError("start: received twice")
        start = _wire.obj(data, "start", "start")
        stream_sid = _wire.text(start, "streamSid", "start")
        top_sid = _wire.opt_text(data, "streamSid", "start")
        if top_sid is not None and top_sid != stream_sid:
            raise ProtocolError("start: streamSid differs from start.streamSid")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            raise ProtocolError("start: 'customParameters' must map names to strings")
        media_format = start.get("mediaFormat") or {}
        if not isinstance(media_format, dict):
            raise ProtocolError("start: 'mediaFormat' must be an object")
        tracks = start.get("tracks", ["inbound"])
        if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
            raise ProtocolError("start: 'tracks' must be a list of strings")
        started = StreamStarted(
            stream_sid=stream_sid,
            call_sid=_wire.text(start, "callSid", "start"),
            account_sid=_wire.text(start, "accountSid", "start"),
            custom_parameters=MappingProxyType(dict(params)),
            encoding=_wire.opt_text(media_format, "encoding", "start", "audio/x-mulaw")
            or "audio/x-mulaw",
            sample_rate=_wire.opt_integer(media_format, "sampleRate", "start") or 8000,
            channels=_wire.opt_integer(media_format, "channels", "start") or 1,
            tracks=tuple(tracks),
        )
        self.started = started
        sid_json = orjson.dumps(stream_sid).decode()
        self._media_prefix = '{"event":"media","streamSid":' + sid_json + ',"media":{"payload":"'
        self._clear = '{"event":"clear","streamSid":' + sid_json + "}"
        self._mark_prefix = '{"event":"mark","streamSid":' + sid_json + ',"mark":{"name":'
        return started

    def _check_sid(self, data: dict[str, Any]) -> None:
        if self.started is None:
            raise ProtocolError(f"{_WHERE}: {data.get('event')} before start")
        sid = data.get("streamSid")
        if sid is not None and sid != self.started.stream_sid:
            raise ProtocolError(f"{_WHERE}: message for another streamSid")

    # --- encoding ---------------------------------------------------------------------

    def media(self, payload_b64: str) -> str:
        """Encode outbound audio: ``{"event":"media","streamSid":…,"media":{"payload":…}}``.

        Args:
            payload_b64: base64 of raw μ-law/8000 bytes (no WAV header). It is
                inserted as is, so it must be base64 text (which needs no escaping).

        Raises:
            ProtocolError: before ``start`` (there is no stream sid yet).
        """
        if not self._media_prefix:
            raise ProtocolError("cannot send media before the stream's start")
        return self._media_prefix + payload_b64 + '"}}'

    def mark(self, name: str) -> str:
        """Encode a ``mark``; Twilio echoes it when the audio sent before it has played.

        Raises:
            ProtocolError: before ``start``.
        """
        if not self._mark_prefix:
            raise ProtocolError("cannot send a mark before the stream's start")
        return self._mark_prefix + orjson.dumps(name).decode() + "}}"

    def clear(self) -> str:
        """Encode ``clear``: drop Twilio's buffered audio and echo pending marks.

        Raises:
            ProtocolError: before ``start``.
        """
        if not self._clear:
            raise ProtocolError("cannot send clear before the stream's start")
        return self._clear
