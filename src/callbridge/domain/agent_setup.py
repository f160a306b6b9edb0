"""What ``callbridge setup`` changes on the ElevenLabs agent: a pure planner.

Agent JSON in (``GET /v1/convai/agents/{agent_id}``, elevenlabs-python 2.78
``GetAgentResponseModel``), a list of typed changes out; :func:`agent_patch` turns the
changes into the sparse ``PATCH`` body. No I/O: the adapter
(:mod:`callbridge.adapters.elevenlabs.agent_config`) and the service
(:mod:`callbridge.services.agent_setup`) do the HTTP.

What callbridge needs of the agent, and where it comes from:

- the client tools: ``initiatePhoneCall`` (the widget's tool, ``web/static/callbridge.js``:
  ``phoneNumber`` required, optional ``name``, ``reason``, ``summary``, ``at`` (call me
  later) and ``retryIfMissed``), and ``end_call``
  and ``transfer_to_human`` (run by the phone bridge, ``services/bridge_tools.py``). All
  three wait for a response (``expects_response``): the page and the bridge always answer.
  Tools are standalone records (``POST /v1/convai/tools``) linked by
  ``conversation_config.agent.prompt.tool_ids``, the current model; inline
  ``prompt.tools`` is deprecated and refused on write since 2025-07-23 [C vendor
  agent-tools-deprecation page]. Whether a live GET still shows inline tools is [U]: they
  are read (an inline tool of the right name counts) but never written.
- ``conversation_config.conversation.client_events`` must list ``client_tool_call``
  (not in the default list [C AsyncAPI]) and the events the bridge reads.
- ``conversation_config.agent.dynamic_variables.dynamic_variable_placeholders``: a
  placeholder for each variable the bridge sends (``services/bridge_host.py``), so the
  dashboard's tests and the web widget (which sends none) have values. Whether
  placeholders stand in at run time for a missing variable is [U].
- ``platform_settings.overrides.conversation_config_override.agent.first_message``,
  only when ``CALLBRIDGE_FIRST_MESSAGE`` is set (the only override the bridge sends;
  allowing one it never sends would let any caller of a public agent use it).
- Audio: μ-law 8000 both ways passes through untouched; anything else is transcoded.
  Switching is a separate change, confirmed on its own, because the web widget uses the
  same formats.

Rules: nothing the owner configured is removed or replaced; lists are merged by name and
sent whole (a PATCH replaces arrays [C3 vendor skill]); maps are sent merged too, since
whether PATCH merges free-form maps is [U]; unknown keys are kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BRIDGE_CLIENT_EVENTS",
    "DEFAULT_CLIENT_EVENTS",
    "DYNAMIC_VARIABLES",
    "PHONE_FORMAT",
    "AddClientEvents",
    "AddDynamicVariables",
    "AllowOverrides",
    "AudioCost",
    "Change",
    "CreateTool",
    "SetAudioFormats",
    "SetupPlan",
    "ToolSpec",
    "UpdateTool",
    "agent_patch",
    "audio_cost",
    "plan_setup",
    "wanted_tools",
]

#: The only format Twilio Media Streams carries; with it the bridge forwards audio as is.
PHONE_FORMAT = "ulaw_8000"
#: The agent's format when the API shows none (OpenAPI default) [C OA25].
DEFAULT_FORMAT = "pcm_16000"
#: ``client_events`` when the agent lists none [C AsyncAPI ConversationConfigOverride].
DEFAULT_CLIENT_EVENTS = (
    "audio",
    "interruption",
    "agent_response",
    "user_transcript",
    "tentative_user_transcript",
    "conversation_initiation_metadata",
    "ping",
)
#: What the bridge reads from the agent socket (``media/agent_protocol.py``).
BRIDGE_CLIENT_EVENTS = (
    "conversation_initiation_metadata",
    "audio",
    "interruption",
    "user_transcript",
    "agent_response",
    "agent_response_correction",
    "client_tool_call",
    "agent_tool_response",
    "ping",
)
#: The dynamic variables the bridge sends (``services/bridge_host.dynamic_variables``),
#: with the placeholder each gets when the agent has none.
DYNAMIC_VARIABLES: Mapping[str, str] = {
    "visitor_name": "the visitor",
    "reason": "not given",
    "web_chat_summary": "none",
    "web_conversation_id": "none",
    "call_id": "none",
}
_FIRST_MESSAGE = "agent.first_message"


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A client tool callbridge runs: what the agent's tool must at least have."""

    name: str
    description: str
    properties: Mapping[str, Mapping[str, Any]]
    required: tuple[str, ...] = ()
    response_timeout_secs: int = 20

    def config(self) -> dict[str, Any]:
        """The tool as a new ``ClientToolConfig`` (elevenlabs-python 2.78)."""
        return {
            "type": "client",
            "name": self.name,
            "description": self.description,
            "expects_response": True,
            "response_timeout_secs": self.response_timeout_secs,
            "parameters": {
                "type": "object",
                "description": "",
                "required": list(self.required),
                "properties": {k: dict(v) for k, v in self.properties.items()},
            },
        }

    def missing(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        """What an existing tool of this name lacks, in words (empty: it will do)."""
        lacks: list[str] = []
        if config.get("type") != "client":
            lacks.append(f"is a {config.get('type')!s} tool, not a client tool")
            return tuple(lacks)
        if config.get("expects_response") is not True:
            lacks.append("does not wait for a response")
        params = config.get("parameters")
        props = params.get("properties") if isinstance(params, Mapping) else None
        props = props if isinstance(props, Mapping) else {}
        required = params.get("required") if isinstance(params, Mapping) else None
        required = required if isinstance(required, list) else []
        for name in self.properties:
            if name not in props:
                lacks.append(f"has no parameter {name!r}")
        for name in self.required:
            if name not in required:
                lacks.append(f"does not require {name!r}")
        return tuple(lacks)

    def merged(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` with what this spec needs added; everything else kept as it was."""
        out = dict(config)
        out["type"] = "client"
        out["expects_response"] = True
        if not out.get("description"):
            out["description"] = self.description
        params = dict(out.get("parameters") or {})
        params.setdefault("type", "object")
        props = dict(params.get("properties") or {})
        for name, schema in self.properties.items():
            props.setdefault(name, dict(schema))
        params["properties"] = props
        required = list(params.get("required") or [])
        required += [name for name in self.required if name not in required]
        params["required"] = required
        out["parameters"] = params
        return out


def wanted_tools() -> tuple[ToolSpec, ...]:
    """The three client tools: the widget's, and the phone bridge's two."""
    return (
        ToolSpec(
            name="initiatePhoneCall",
            description=(
                "Call the visitor on the phone. Use it when the visitor asks to be called "
                "and has given the phone number to call."
            ),
            properties={
                "phoneNumber": _string("The number to call, with its country code."),
                "name": _string("The visitor's name, if they gave it."),
                "reason": _string("Why the visitor wants a call, in a few words."),
                "summary": _string("A short summary of the chat so far, for the phone agent."),
                "at": _string(
                    "Only when the visitor wants a call later: when, as an ISO 8601 time with"
                    " its offset (2026-12-02T09:00:00-05:00). If the tool answers with times"
                    " it can offer, offer those and call again with the one chosen."
                ),
                "retryIfMissed": {
                    "type": "boolean",
                    "description": "True if the visitor wants another try when they miss the call.",
                },
            },
            required=("phoneNumber",),
        ),
        ToolSpec(
            name="end_call",
            description="End the phone call, once the conversation is over.",
            properties={},
        ),
        ToolSpec(
            name="transfer_to_human",
            description="Put the caller through to a person, when they ask for one.",
            properties={"reason": _string("Why the caller wants a person.")},
        ),
    )


# --- the changes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateTool:
    """Create a standalone client tool and link it to the agent."""

    name: str
    config: Mapping[str, Any]

    def describe(self) -> str:
        """One line for the plan."""
        return f"add the client tool {self.name!r} (a new tool, linked by tool_ids)"


@dataclass(frozen=True, slots=True)
class UpdateTool:
    """Complete an existing standalone tool (the Tools API's PATCH takes the whole config)."""

    tool_id: str
    name: str
    config: Mapping[str, Any]
    missing: tuple[str, ...]

    def describe(self) -> str:
        """One line for the plan."""
        return f"complete the tool {self.name!r} ({self.tool_id}): it {'; '.join(self.missing)}"


@dataclass(frozen=True, slots=True)
class AddClientEvents:
    """List the client events the bridge reads (the whole list is sent)."""

    added: tuple[str, ...]
    events: tuple[str, ...]

    def describe(self) -> str:
        """One line for the plan."""
        return "send these events to clients too: " + ", ".join(self.added)


@dataclass(frozen=True, slots=True)
class AddDynamicVariables:
    """Add placeholders for the dynamic variables the bridge sends (the whole map is sent)."""

    added: tuple[str, ...]
    placeholders: Mapping[str, Any]

    def describe(self) -> str:
        """One line for the plan."""
        return "add dynamic variable placeholders: " + ", ".join(self.added)


@dataclass(frozen=True, slots=True)
class AllowOverrides:
    """Allow the overrides the bridge sends (paths under ``conversation_config_override``)."""

    paths: tuple[str, ...]

    def describe(self) -> str:
        """One line for the plan."""
        return "allow the override of " + ", ".join(self.paths)


@dataclass(frozen=True, slots=True)
class SetAudioFormats:
    """Switch the agent's audio to μ-law 8000 both ways (also what the web widget gets)."""

    input_from: str
    output_from: str

    def describe(self) -> str:
        """One line for the plan."""
        return (
            f"switch the agent's audio to {PHONE_FORMAT} both ways (input {self.input_from}, "
            f"output {self.output_from} now); the web widget then gets telephone-quality audio"
        )


Change = CreateTool | UpdateTool | AddClientEvents | AddDynamicVariables | AllowOverrides


@dataclass(frozen=True, slots=True)
class AudioCost:
    """What one direction's format costs the bridge."""

    direction: str
    format: str
    cost: str

    @property
    def passthrough(self) -> bool:
        """Whether the audio goes through untouched."""
        return self.format == PHONE_FORMAT


@dataclass(frozen=True, slots=True)
class SetupPlan:
    """Everything ``setup`` would change, and what it only reports.

    Attributes:
        changes: applied together after one confirmation.
        audio_change: offered on its own (it affects the web widget), or None.
        audio: the cost of the agent's input and output formats.
        notes: what ``setup`` will not change, each a sentence saying what to do.
    """

    changes: tuple[Change, ...]
    audio_change: SetAudioFormats | None
    audio: tuple[AudioCost, AudioCost]
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def up_to_date(self) -> bool:
        """Nothing to change (the audio offer aside)."""
        return not self.changes


def audio_cost(direction: str, fmt: str) -> AudioCost:
    """The bridge's cost of carrying ``fmt`` one way (figures from ``media/transcode.py``)."""
    if fmt == PHONE_FORMAT:
        cost = "none: μ-law 8000 passes through untouched"
    elif fmt == "pcm_8000":
        cost = "μ-law ⇄ 16-bit PCM by table (about 1.4 µs per 20 ms frame), same rate"
    elif fmt.startswith("pcm_") and fmt[4:].isdigit():
        cost = (
            f"μ-law ⇄ PCM and resampling 8000 ⇄ {fmt[4:]} Hz (soxr, about 5-9 µs per 20 ms "
            "frame, a few ms of filter delay), and more bytes on the agent socket"
        )
    else:
        cost = "unknown format: the bridge cannot carry it"
    return AudioCost(direction, fmt, cost)


# --- the planner -------------------------------------------------------------------------


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _path(document: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    node: Mapping[str, Any] = document
    for key in keys:
        node = _obj(node.get(key))
    return node


def _tool_ids(agent: Mapping[str, Any]) -> list[str]:
    ids = _path(agent, "conversation_config", "agent", "prompt").get("tool_ids")
    return [str(i) for i in ids] if isinstance(ids, list) else []


def plan_setup(
    agent: Mapping[str, Any],
    linked_tools: Mapping[str, Mapping[str, Any]],
    *,
    first_message_override: bool,
) -> SetupPlan:
    """Plan the changes that make ``agent`` work with callbridge.

    Args:
        agent: the agent as ``GET /v1/convai/agents/{agent_id}`` returns it.
        linked_tools: ``tool_id`` → ``tool_config`` of each tool in ``tool_ids`` that
            could be read.
        first_message_override: whether the bridge sends a first message
            (``CALLBRIDGE_FIRST_MESSAGE`` is set).

    Returns:
        The plan; empty ``changes`` when the agent is already as callbridge needs it.
    """
    changes: list[Change] = []
    notes: list[str] = []
    prompt = _path(agent, "conversation_config", "agent", "prompt")
    inline = [t for t in prompt.get("tools") or [] if isinstance(t, Mapping)]
    built_in = _path(prompt, "built_in_tools")
    for spec in wanted_tools():
        linked = [(i, c) for i, c in linked_tools.items() if c.get("name") == spec.name]
        legacy = [t for t in inline if t.get("name") == spec.name]
        if spec.name == "end_call" and built_in.get("end_call") and not linked and not legacy:
            notes.append(
                "The agent has ElevenLabs' system tool end_call, which ends the conversation "
                "on ElevenLabs' side; the bridge then hangs up. No client end_call is added "
                "beside it (two tools of one name)."
            )
            continue
        if linked:
            tool_id, config = linked[0]
            lacks = spec.missing(config)
            if lacks:
                changes.append(UpdateTool(tool_id, spec.name, spec.merged(config), lacks))
        elif legacy:
            lacks = spec.missing(legacy[0])
            if lacks:
                notes.append(
                    f"The agent's inline (deprecated) tool {spec.name!r} {'; '.join(lacks)}: "
                    "fix it in the ElevenLabs dashboard (setup does not write inline tools)."
                )
        else:
            changes.append(CreateTool(spec.name, spec.config()))

    conversation = _path(agent, "conversation_config", "conversation")
    listed = conversation.get("client_events")
    current = [str(e) for e in listed] if isinstance(listed, list) else list(DEFAULT_CLIENT_EVENTS)
    added = tuple(e for e in BRIDGE_CLIENT_EVENTS if e not in current)
    if added:
        changes.append(AddClientEvents(added, tuple(current) + added))

    dynamic = _path(agent, "conversation_config", "agent", "dynamic_variables")
    placeholders = dict(_obj(dynamic.get("dynamic_variable_placeholders")))
    new_names = tuple(name for name in DYNAMIC_VARIABLES if name not in placeholders)
    if new_names:
        merged = placeholders | {name: DYNAMIC_VARIABLES[name] for name in new_names}
        changes.append(AddDynamicVariables(new_names, merged))

    if first_message_override:
        allowed = _path(
            agent, "platform_settings", "overrides", "conversation_config_override", "agent"
        )
        if allowed.get("first_message") is not True:
            changes.append(AllowOverrides((_FIRST_MESSAGE,)))

    asr = _path(agent, "conversation_config", "asr")
    tts = _path(agent, "conversation_config", "tts")
    fmt_in = str(asr.get("user_input_audio_format") or DEFAULT_FORMAT)
    fmt_out = str(tts.get("agent_output_audio_format") or DEFAULT_FORMAT)
    audio = (audio_cost("input", fmt_in), audio_cost("output", fmt_out))
    audio_change = (
        None
        if fmt_in == PHONE_FORMAT and fmt_out == PHONE_FORMAT
        else SetAudioFormats(fmt_in, fmt_out)
    )
    return SetupPlan(tuple(changes), audio_change, audio, tuple(notes))


def agent_patch(
    agent: Mapping[str, Any],
    changes: Sequence[Change | SetAudioFormats],
    new_tool_ids: Sequence[str] = (),
) -> dict[str, Any]:
    """The sparse ``PATCH /v1/convai/agents/{agent_id}`` body for ``changes``.

    Args:
        agent: the agent as read (lists are sent whole, so the owner's entries stay).
        changes: the changes to apply (:class:`CreateTool` and :class:`UpdateTool` only
            contribute through ``new_tool_ids``: tools are written by the Tools API).
        new_tool_ids: ids of the tools just created, to link.

    Returns:
        The body; ``{}`` when nothing on the agent itself changes.
    """
    body: dict[str, Any] = {}

    def at(*keys: str) -> dict[str, Any]:
        node = body
        for key in keys:
            node = node.setdefault(key, {})
        return node

    existing = _tool_ids(agent)
    fresh = [i for i in new_tool_ids if i not in existing]
    if fresh:
        at("conversation_config", "agent", "prompt")["tool_ids"] = existing + fresh
    for change in changes:
        if isinstance(change, AddClientEvents):
            at("conversation_config", "conversation")["client_events"] = list(change.events)
        elif isinstance(change, AddDynamicVariables):
            at("conversation_config", "agent", "dynamic_variables")[
                "dynamic_variable_placeholders"
            ] = dict(change.placeholders)
        elif isinstance(change, AllowOverrides):
            for path in change.paths:
                *parents, leaf = path.split(".")
                at("platform_settings", "overrides", "conversation_config_override", *parents)[
                    leaf
                ] = True
        elif isinstance(change, SetAudioFormats):
            at("conversation_config", "asr")["user_input_audio_format"] = PHONE_FORMAT
            at("conversation_config", "tts")["agent_output_audio_format"] = PHONE_FORMAT
    return body
