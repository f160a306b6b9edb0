"""``callbridge doctor --online`` as a real process against ``callbridge sandbox --port N``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import free_port

EXE = Path(sys.executable).with_name("callbridge")
SID = "AC" + "0123456789abcdef" * 2
TOKEN = "sandbox-token-0123456789"
AGENT = "agent_doctor_test"
FROM = "+12025550142"


@pytest.fixture
def sandbox_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A running ``callbridge sandbox`` and the environment that points at it."""
    port = free_port()
    env = {
        **os.environ,
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_PHONE_NUMBER": FROM,
        "ELEVENLABS_AGENT_ID": AGENT,
        "ELEVENLABS_API_KEY": "sk_doctor",
        "CALLBRIDGE_SANDBOX": "true",
        "COLUMNS": "250",
    }
    proc = subprocess.Popen(  # noqa: S603 - our own script, fixed arguments
        [str(EXE), "sandbox", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/sandbox/elevenlabs/v1/convai/agents/{AGENT}", timeout=1)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, "callbridge sandbox exited"
                assert time.monotonic() < deadline, "callbridge sandbox did not start"
                time.sleep(0.1)
        yield env | {
            "TWILIO_API_BASE_URL": f"{base}/sandbox/twilio",
            "ELEVENLABS_API_BASE_URL": f"{base}/sandbox/elevenlabs",
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/doctor.db",
            "CALLBRIDGE_ADMIN_TOKEN": "t" * 32,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def doctor(env: dict[str, str], tmp: Path) -> tuple[int, str]:
    done = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [str(EXE), "doctor", "--online"],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=90,
    )
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_a_ready_sandbox_account_passes_every_online_check(
    sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """The sandbox's agent and caller id are as setup leaves them: exit 0, one line each,
    and the https check says it was skipped."""
    code, out = doctor(sandbox_env, tmp_path)
    assert code == 0, out
    for text in (
        "The ElevenLabs agent 'callbridge demo agent' exists",
        "tools, client events, variables and overrides are set up",
        "Agent audio input is ulaw_8000",
        "is a voice number of the account",
        "PUBLIC_BASE_URL check skipped: the sandbox is plain http",
        "dialing permissions stay within",
        "no problems found",
    ):
        assert text in out, out
    line = out.split("TWILIO_PHONE_NUMBER", 2)[-1].split("voice number")[0]
    assert FROM not in line  # masked in the finding (the settings table shows it as set)


def test_a_wrong_caller_id_agent_or_override_is_a_problem_with_what_to_do(
    sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """A caller id the account does not have, and a first message the agent does not
    allow, each give a line that says what to do, and exit 1; an unknown agent too."""
    env = sandbox_env | {
        "TWILIO_PHONE_NUMBER": "+12025550199",
        "CALLBRIDGE_FIRST_MESSAGE": "Hello!",
    }
    code, out = doctor(env, tmp_path)
    assert code == 1, out
    assert "neither a number of this Twilio account nor a verified caller id" in out
    assert "allow the override of agent.first_message: run `callbridge setup`" in out

    code, out = doctor(sandbox_env | {"ELEVENLABS_AGENT_ID": "agent_nope"}, tmp_path)
    assert code == 1, out
    assert "ElevenLabs has no agent 'agent_nope'" in out


@pytest.fixture
def tls_healthz(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real https server answering /healthz with a self-signed certificate for 127.0.0.1;
    its base URL and the certificate (to trust it through SSL_CERT_FILE)."""
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(  # noqa: S603 - fixed arguments
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",  # noqa: S607
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )

    class Healthz(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Healthz)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()


def test_outside_the_sandbox_the_public_address_must_answer_over_trusted_https(
    sandbox_env: dict[str, str], tls_healthz: tuple[str, Path], tmp_path: Path
) -> None:
    """With production settings (the emulators at the vendors' URLs), PUBLIC_BASE_URL with
    a self-signed certificate is a problem that says what to do; the same server trusted
    passes; an address where nothing listens says it does not answer."""
    public, cert = tls_healthz
    production = sandbox_env | {
        "CALLBRIDGE_SANDBOX": "false",
        "PUBLIC_BASE_URL": public,
        "ELEVENLABS_WEBHOOK_SECRET": "wsec_" + "w" * 24,
        "CALLBRIDGE_ALLOWED_ORIGINS": "https://www.example.com",
        "CALLBRIDGE_SECRET_KEY": "k" * 32,
    }
    code, out = doctor(production, tmp_path)
    assert code == 1, out
    assert f"{public} has no certificate Twilio will trust" in out, out
    assert "mode: production" in out and "is a voice number of the account" in out

    code, out = doctor(production | {"SSL_CERT_FILE": str(cert)}, tmp_path)
    assert code == 0, out
    assert f"{public}/healthz answers over https with a valid certificate" in out

    closed = f"https://127.0.0.1:{free_port()}"
    code, out = doctor(production | {"PUBLIC_BASE_URL": closed}, tmp_path)
    assert code == 1, out
    assert f"{closed} does not answer from here" in out, out
