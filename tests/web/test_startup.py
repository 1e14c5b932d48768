"""Start-up settings: listen addresses, the exposure warning, TLS."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess

import aiohttp

from web.server import exposure_warning, listen_hosts, url_of
from web.services import ServerSettings

from .client import get


def test_listen_hosts_urls_and_the_warning_for_exposed_listeners() -> None:
    local = ServerSettings()
    assert listen_hosts(local) == ["127.0.0.1"] and url_of(local, 8188) == "http://127.0.0.1:8188"
    assert exposure_warning(local) is None
    assert exposure_warning(ServerSettings(listen="localhost,::1")) is None
    everywhere = ServerSettings(listen="0.0.0.0,::")
    assert listen_hosts(everywhere) == ["0.0.0.0", "::"]
    assert "WARNING" in exposure_warning(everywhere) and "--api-token" in exposure_warning(everywhere)
    guarded = ServerSettings(listen="0.0.0.0", api_token="t")
    assert "WARNING" not in exposure_warning(guarded)
    assert url_of(ServerSettings(listen="::1", tls_certfile="c", tls_keyfile="k"), 1) == "https://[::1]:1"


def test_tls_listener_serves_https(make_harness, tmp_path) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "the TLS test needs the openssl command line tool (Debian: apt-get install openssl)"
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    server = make_harness(tls_keyfile=str(key), tls_certfile=str(cert)).start()
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            status, body = await get(s, f"https://127.0.0.1:{server.port}/api/prompt", ssl=context)
            assert status == 200 and body == {"exec_info": {"queue_remaining": 0}}
            ws = await s.ws_connect(f"wss://127.0.0.1:{server.port}/ws", ssl=context)
            assert (await ws.receive_json())["type"] == "status"
            await ws.close()

    asyncio.run(scenario())


def test_several_listen_addresses_share_one_port(make_harness) -> None:
    server = make_harness(listen="127.0.0.1,::1").start()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            for host in ("127.0.0.1", "[::1]"):
                assert await get(s, f"http://{host}:{server.port}/api/prompt") == (
                    200,
                    {"exec_info": {"queue_remaining": 0}},
                )

    asyncio.run(scenario())
