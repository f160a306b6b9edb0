"""The pure planner of ``callbridge setup``: agent JSON in, typed changes out."""

from __future__ import annotations

import copy
from typing import Any

from callbridge.domain.agent_setup import (
    BRIDGE_CLIENT_EVENTS,
    DEFAULT_CLIENT_EVENTS,
    DYNAMIC_VARIABLES,
    AddClientEvents,
    AddDynamicVariables,
    AllowOverrides,
    CreateTool,
    SetAudioFormats,
    UpdateTool,
    agent_patch,
    plan_setup,
    wanted_tools,
)


def fresh_agent() -> dict[str, Any]:
    """An agent as the API creates it: no tools, default events and formats."""
    return {
        "agent_id": "agent_1",
        "name": "Shop",
        "metadata": {"created_at_unix_secs": 1, "updated_at_unix_secs": 1},
        "conversation_config": {
            "agent": {"first_message": "Hi", "prompt": {"prompt": "Be kind.", "tool_ids": []}},
            "conversation": {},
            "asr": {"user_input_audio_format": "pcm_16000"},
            "tts": {"agent_output_audio_format": "pcm_16000"},
        },
        "platform_settings": {},
    }


def apply(agent: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``body`` into ``agent`` (dicts merge, lists and scalars replace)."""
    out = copy.deepcopy(agent)

    def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
        for key, value in patch.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                merge(target[key], value)
            else:
                target[key] = copy.deepcopy(value)

    merge(out, body)
    return out


def configured() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A fresh agent after the plan is applied, with the tools it created."""
    agent = fresh_agent()
    plan = plan_setup(agent, {}, first_message_override=True)
    tools = {
        f"tool_{i}": dict(c.config) for i, c in enumerate(plan.changes) if isinstance(c, CreateTool)
    }
    body = agent_patch(agent, plan.changes, list(tools))
    return apply(agent, body), tools


def test_a_fresh_agent_gets_three_tools_events_placeholders_and_the_override() -> None:
    """A new agent needs the three client tools, client_tool_call, the five placeholders
    and, when a first message is configured, its override permission."""
    plan = plan_setup(fresh_agent(), {}, first_message_override=True)
    created = [c.name for c in plan.changes if isinstance(c, CreateTool)]
    assert created == ["initiatePhoneCall", "end_call", "transfer_to_human"]
    events = next(c for c in plan.changes if isinstance(c, AddClientEvents))
    assert "client_tool_call" in events.added
    assert events.events[: len(DEFAULT_CLIENT_EVENTS)] == DEFAULT_CLIENT_EVENTS
    assert set(BRIDGE_CLIENT_EVENTS) <= set(events.events)
    placeholders = next(c for c in plan.changes if isinstance(c, AddDynamicVariables))
    assert set(placeholders.added) == set(DYNAMIC_VARIABLES)
    assert AllowOverrides(("agent.first_message",)) in plan.changes
    assert plan.audio_change == SetAudioFormats("pcm_16000", "pcm_16000")
    assert not plan.up_to_date


def test_the_phone_tool_has_the_widget_parameters_and_waits_for_an_answer() -> None:
    """initiatePhoneCall requires phoneNumber, offers name, reason and summary, and
    expects a response, as callbridge.js calls it."""
    config = wanted_tools()[0].config()
    assert config["name"] == "initiatePhoneCall" and config["type"] == "client"
    assert config["expects_response"] is True
    assert config["parameters"]["required"] == ["phoneNumber"]
    assert set(config["parameters"]["properties"]) == {
        "phoneNumber",
        "name",
        "reason",
        "summary",
        "at",
        "retryIfMissed",
    }


def test_no_override_is_allowed_when_no_first_message_is_sent() -> None:
    """Without CALLBRIDGE_FIRST_MESSAGE the plan allows no override at all."""
    plan = plan_setup(fresh_agent(), {}, first_message_override=False)
    assert not any(isinstance(c, AllowOverrides) for c in plan.changes)


def test_a_second_plan_after_applying_the_first_changes_nothing() -> None:
    """Idempotent: once applied, the plan is empty."""
    agent, tools = configured()
    again = plan_setup(agent, tools, first_message_override=True)
    assert again.changes == () and again.up_to_date
    assert agent_patch(agent, again.changes) == {}


def test_the_owners_tools_events_placeholders_and_unknown_keys_survive() -> None:
    """Lists are merged by name and sent whole: the owner's entries stay, in place."""
    agent = fresh_agent()
    agent["conversation_config"]["agent"]["prompt"]["tool_ids"] = ["tool_owner"]
    agent["conversation_config"]["conversation"]["client_events"] = ["audio", "vad_score"]
    agent["conversation_config"]["agent"]["dynamic_variables"] = {
        "dynamic_variable_placeholders": {"shop": "Acme", "visitor_name": "friend"}
    }
    agent["conversation_config"]["agent"]["future_field"] = {"x": 1}
    owner_tool = {"type": "webhook", "name": "lookup_order", "description": "orders"}
    plan = plan_setup(agent, {"tool_owner": owner_tool}, first_message_override=False)
    body = agent_patch(agent, plan.changes, ["tool_new"])
    prompt = body["conversation_config"]["agent"]["prompt"]
    assert prompt["tool_ids"] == ["tool_owner", "tool_new"]
    events = body["conversation_config"]["conversation"]["client_events"]
    assert events[:2] == ["audio", "vad_score"] and "client_tool_call" in events
    placeholders = body["conversation_config"]["agent"]["dynamic_variables"][
        "dynamic_variable_placeholders"
    ]
    assert placeholders["shop"] == "Acme" and placeholders["visitor_name"] == "friend"
    assert "future_field" not in body["conversation_config"]["agent"]  # not touched
    assert apply(agent, body)["conversation_config"]["agent"]["future_field"] == {"x": 1}


def test_an_incomplete_tool_of_the_same_name_is_completed_not_replaced() -> None:
    """A linked initiatePhoneCall without summary and not waiting is updated in place,
    keeping the owner's description and extra parameters."""
    agent = fresh_agent()
    agent["conversation_config"]["agent"]["prompt"]["tool_ids"] = ["tool_x"]
    theirs = {
        "type": "client",
        "name": "initiatePhoneCall",
        "description": "Owner's words",
        "expects_response": False,
        "response_timeout_secs": 30,
        "parameters": {
            "type": "object",
            "required": ["phoneNumber"],
            "properties": {
                "phoneNumber": {"type": "string", "description": "n"},
                "language": {"type": "string", "description": "l"},
            },
        },
    }
    plan = plan_setup(agent, {"tool_x": theirs}, first_message_override=False)
    update = next(c for c in plan.changes if isinstance(c, UpdateTool))
    assert update.tool_id == "tool_x"
    assert "does not wait for a response" in update.missing
    config = update.config
    assert config["description"] == "Owner's words" and config["response_timeout_secs"] == 30
    assert config["expects_response"] is True
    assert {"phoneNumber", "language", "name", "reason", "summary", "at", "retryIfMissed"} == set(
        config["parameters"]["properties"]
    )
    assert not any(
        isinstance(c, CreateTool) and c.name == "initiatePhoneCall" for c in plan.changes
    )


def test_inline_legacy_tools_are_read_but_never_written() -> None:
    """A deprecated inline tool of the right shape counts; a wrong one becomes a note."""
    agent = fresh_agent()
    good = wanted_tools()[0].config()
    bad = {"type": "client", "name": "end_call", "description": "x"}
    agent["conversation_config"]["agent"]["prompt"]["tools"] = [good, bad]
    plan = plan_setup(agent, {}, first_message_override=False)
    created = {c.name for c in plan.changes if isinstance(c, CreateTool)}
    assert created == {"transfer_to_human"}
    assert any("inline" in note and "end_call" in note for note in plan.notes)
    assert "tools" not in agent_patch(agent, plan.changes).get("conversation_config", {}).get(
        "agent", {}
    ).get("prompt", {})


def test_a_system_end_call_is_not_doubled_by_a_client_one() -> None:
    """With ElevenLabs' built-in end_call the plan adds no client end_call and says why."""
    agent = fresh_agent()
    agent["conversation_config"]["agent"]["prompt"]["built_in_tools"] = {
        "end_call": {
            "type": "system",
            "name": "end_call",
            "params": {"system_tool_type": "end_call"},
        }
    }
    plan = plan_setup(agent, {}, first_message_override=False)
    assert "end_call" not in {c.name for c in plan.changes if isinstance(c, CreateTool)}
    assert any("system tool end_call" in note for note in plan.notes)


def test_audio_costs_and_the_offer() -> None:
    """μ-law 8000 costs nothing and is not offered again; PCM is priced per direction."""
    agent = fresh_agent()
    agent["conversation_config"]["asr"]["user_input_audio_format"] = "ulaw_8000"
    agent["conversation_config"]["tts"]["agent_output_audio_format"] = "pcm_8000"
    plan = plan_setup(agent, {}, first_message_override=False)
    assert plan.audio[0].passthrough and "untouched" in plan.audio[0].cost
    assert not plan.audio[1].passthrough and "table" in plan.audio[1].cost
    assert plan.audio_change == SetAudioFormats("ulaw_8000", "pcm_8000")
    body = agent_patch(agent, [plan.audio_change])
    assert body == {
        "conversation_config": {
            "asr": {"user_input_audio_format": "ulaw_8000"},
            "tts": {"agent_output_audio_format": "ulaw_8000"},
        }
    }
    agent = apply(agent, body)
    assert plan_setup(agent, {}, first_message_override=False).audio_change is None


def test_missing_formats_read_as_the_vendor_default() -> None:
    """An agent that shows no formats is taken to use pcm_16000, which is resampled."""
    agent = fresh_agent()
    del agent["conversation_config"]["asr"], agent["conversation_config"]["tts"]
    plan = plan_setup(agent, {}, first_message_override=False)
    assert [a.format for a in plan.audio] == ["pcm_16000", "pcm_16000"]
    assert "resampling 8000 ⇄ 16000" in plan.audio[0].cost
