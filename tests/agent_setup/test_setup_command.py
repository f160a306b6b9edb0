"""``callbridge setup`` as a real process against the ElevenLabs emulator over HTTP."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from callbridge.sandbox.elevenlabs.agents_api import fresh_agent
from tests.sandbox_elevenlabs.conftest import AGENT_ID, API_KEY, MOUNT, make_emulator, mounted
from tests.support.server import serve

EXE = Path(sys.executable).with_name("callbridge")


async def run_setup(base: str, tmp: Path, *args: str, stdin: str = "") -> tuple[int, str]:
    """``callbridge setup ARGS`` with the emulator as ElevenLabs; (exit code, output)."""
    env = {
        **os.environ,
        "CALLBRIDGE_SANDBOX": "true",
        "ELEVENLABS_API_BASE_URL": base + MOUNT,
        "ELEVENLABS_AGENT_ID": AGENT_ID,
        "ELEVENLABS_API_KEY": API_KEY,
        "CALLBRIDGE_FIRST_MESSAGE": "Hello from the shop",
        "COLUMNS": "200",
    }
    proc = await asyncio.create_subprocess_exec(
        str(EXE),
        "setup",
        *args,
        env=env,
        cwd=tmp,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    return int(proc.returncode or 0), " ".join(out.decode().split())


async def test_setup_configures_a_new_agent_then_finds_nothing_to_change(tmp_path: Path) -> None:
    """The first run adds the tools, events, placeholders and override, keeps the owner's
    tool, and switches the audio only with --ulaw; the second run changes nothing."""
    agent = fresh_agent(AGENT_ID)
    emulator = make_emulator(agent=agent)
    owner_tool = emulator.agents_api.add_tool(
        {"type": "client", "name": "showProducts", "description": "Show products"}
    )
    emulator.agents_api.agent["conversation_config"]["agent"]["prompt"]["tool_ids"] = [owner_tool]
    async with serve(mounted(emulator)) as base:
        code, out = await run_setup(base, tmp_path, "--yes")
        assert code == 0, out
        for text in ("initiatePhoneCall", "client_tool_call", "agent.first_message", "--ulaw"):
            assert text in out, out
        document = emulator.agents_api.document()
        prompt = document["conversation_config"]["agent"]["prompt"]
        names = [emulator.agents_api.tools[i]["name"] for i in prompt["tool_ids"]]
        assert names[0] == "showProducts"
        assert sorted(names[1:]) == ["end_call", "initiatePhoneCall", "transfer_to_human"]
        assert str(emulator.output_format) == "pcm_16000"  # not without --ulaw
        overrides = document["platform_settings"]["overrides"]["conversation_config_override"]
        assert overrides["agent"]["first_message"] is True
        assert overrides["tts"]["voice_id"] is False  # the rest untouched

        code, out = await run_setup(base, tmp_path, "--yes", "--ulaw")
        assert code == 0, out
        assert "nothing to change" in out
        assert str(emulator.output_format) == "ulaw_8000"
        assert str(emulator.input_format) == "ulaw_8000"

        patches = len(emulator.agents_api.patches)
        tools = len(emulator.agents_api.tools)
        code, out = await run_setup(base, tmp_path, "--yes")
        assert code == 0, out
        assert "nothing to change" in out and "offer" not in out
        assert len(emulator.agents_api.patches) == patches
        assert len(emulator.agents_api.tools) == tools


async def test_declining_the_confirmation_changes_nothing(tmp_path: Path) -> None:
    """Without --yes, answering no leaves the agent as it was and exits 1."""
    emulator = make_emulator(agent=fresh_agent(AGENT_ID))
    async with serve(mounted(emulator)) as base:
        code, out = await run_setup(base, tmp_path, stdin="n\n")
        assert code == 1, out
        assert "Nothing changed" in out
        assert emulator.agents_api.patches == [] and emulator.agents_api.tools == {}


async def test_an_unknown_agent_is_one_sentence(tmp_path: Path) -> None:
    """A wrong ELEVENLABS_AGENT_ID stops setup with exit 2 and a sentence, no traceback."""
    emulator = make_emulator(agent_id="agent_someone_else")
    async with serve(mounted(emulator)) as base:
        code, out = await run_setup(base, tmp_path, "--yes")
        assert code == 2, out
        assert "ElevenLabs has no such agent" in out and "Traceback" not in out


async def test_a_complete_unlinked_tool_in_the_workspace_is_linked_not_created_twice(
    tmp_path: Path,
) -> None:
    """A run interrupted after creating a tool left it unlinked: the next run links that
    tool instead of creating a second one of the same name."""
    from callbridge.domain.agent_setup import wanted_tools

    emulator = make_emulator(agent=fresh_agent(AGENT_ID))
    left_over = emulator.agents_api.add_tool(wanted_tools()[0].config())
    async with serve(mounted(emulator)) as base:
        code, out = await run_setup(base, tmp_path, "--yes")
        assert code == 0, out
        assert f"found the tool 'initiatePhoneCall' ({left_over}) in the workspace" in out
    names = sorted(str(c["name"]) for c in emulator.agents_api.tools.values())
    assert names == ["end_call", "initiatePhoneCall", "transfer_to_human"]
    linked = emulator.agents_api.agent["conversation_config"]["agent"]["prompt"]["tool_ids"]
    assert left_over in linked


async def test_a_refused_api_key_is_one_sentence(tmp_path: Path) -> None:
    """ElevenLabs refusing the key stops setup with exit 2 and says which setting to check."""
    emulator = make_emulator(api_key="sk_the_right_one")
    async with serve(mounted(emulator)) as base:
        code, out = await run_setup(base, tmp_path, "--yes")
        assert code == 2, out
        assert "the API key was refused (check ELEVENLABS_API_KEY)" in out
        assert "Traceback" not in out
