"""Issue 14: the operator sees what an answering machine did to a call."""

from __future__ import annotations

from pathlib import Path

from tests.integration.helpers import wait_for_status
from tests.operator.conftest import TOKEN, VISITOR, admin_sandbox, signed_in

_FAST = {
    "CALLBRIDGE_AMD_SPEECH_THRESHOLD": "1000",
    "CALLBRIDGE_AMD_SPEECH_END_THRESHOLD": "500",
    "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.1,machine=2",
}


async def test_call_page_list_filter_and_api_show_the_machine(tmp_path: Path) -> None:
    """A call a machine took: the call page shows answered_by, the detection time and the
    message left; the list filter offers and finds ``voicemail``; the JSON API says it."""
    async with admin_sandbox(tmp_path, _FAST) as sb:
        body = (await sb.request_call(VISITOR)).json()
        await wait_for_status(sb, body["call_id"], {"voicemail"}, timeout=30)
        async with signed_in(sb) as admin:
            page = (await admin.get(f"/admin/calls/{body['call_id']}")).text
            assert "machine_end_beep" in page
            assert "detected in 2.0 s" in page
            assert "message left" in page
            listing = (await admin.get("/admin?status=voicemail")).text
            assert '<option value="voicemail" selected>' in listing
            assert body["call_id"] in listing
            other = (await admin.get("/admin?status=completed")).text
            assert body["call_id"] not in other
        api = await sb.http.get(
            f"/api/admin/calls/{body['call_id']}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        detail = api.json()
        assert detail["status"] == "voicemail"
        assert detail["answered_by"] == "machine_end_beep"
        assert detail["amd_duration_ms"] == 2000
        assert detail["message_left"] is True
