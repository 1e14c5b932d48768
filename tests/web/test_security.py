"""Malformed requests, cross-origin requests, the API token."""

from __future__ import annotations

import asyncio
import json
import struct

import aiohttp

from . import fakes
from .client import get, post


def test_malformed_prompts_get_400_json_and_the_server_keeps_serving(harness) -> None:
    bad_bodies = [
        b"not json",
        b"[1,2]",
        b'{"prompt": 5}',
        b'{"prompt": {"1": 3}}',
        b'{"prompt": {"1": {"inputs": {}}}}',
        b'{"prompt": {"1": {"class_type": "MakeImage", "inputs": {"seed": NaN}}}}',
        b'{"prompt": {"1": {"class_type": 7}}}',
        b"",
        b'{"prompt": {}}',
        b"\xff\xfe",
        b'{"prompt": {"1": {"class_type": "MakeImage", "inputs": []}}}',
    ]
    bad_fields = [
        {"client_id": 5},
        {"extra_data": []},
        {"front": "yes"},
        {"partial_execution_targets": "9"},
        {"prompt_id": 12},
        {"number": "first"},
    ]

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            for body in bad_bodies:
                status, answer = await post(
                    s, harness.url + "/prompt", data=body, headers={"Content-Type": "application/json"}
                )
                assert status == 400 and "error" in answer and answer["node_errors"] == {}, body
            for fields in bad_fields:
                status, answer = await post(s, harness.url + "/prompt", {"prompt": fakes.txt2img(), **fields})
                assert status == 400 and "error" in answer, fields
            for path, body in (
                ("/queue", b"[]"),
                ("/queue", b'{"delete": "x"}'),
                ("/history", b"{bad"),
                ("/interrupt", b'{"prompt_id": 1}'),
                ("/free", b'{"unload_models": "y"}'),
                ("/api/jobs/cancel", b'{"job_ids": [1]}'),
                ("/settings", b"[]"),
            ):
                status, answer = await post(s, harness.url + path, data=body)
                assert status == 400 and "error" in answer, (path, body)
            for path in (
                "/history?max_items=x",
                "/api/jobs?status=done",
                "/api/jobs?limit=ten",
                "/view?filename=x.png&preview=gif",
                "/prompt/x/status/extra",
            ):
                status, answer = await get(s, harness.url + path)
                assert status in (400, 404) and isinstance(answer, dict) and "error" in answer, path
            prompt_id = "fixed-id-1"
            status, _ = await post(
                s, harness.url + "/prompt", {"prompt": fakes.txt2img(), "prompt_id": prompt_id}
            )
            assert status == 200
            status, answer = await post(
                s, harness.url + "/prompt", {"prompt": fakes.txt2img(), "prompt_id": prompt_id}
            )
            assert status == 400 and answer["error"]["type"] == "duplicate_prompt_id"
            status, _ = await get(s, harness.url + "/system_stats")
            assert status == 200

    asyncio.run(scenario())


def test_cross_origin_state_changes_are_refused_but_same_origin_and_scripts_pass(harness) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            evil = {"Origin": "http://evil.example"}
            status, body = await post(s, harness.url + "/prompt", {"prompt": fakes.txt2img()}, headers=evil)
            assert status == 403 and body["error"]["type"] == "forbidden_origin"
            assert (await post(s, harness.url + "/api/queue", {"clear": True}, headers=evil))[0] == 403
            assert (await post(s, harness.url + "/api/settings/x", data="1", headers=evil))[0] == 403
            try:
                await s.ws_connect(harness.url.replace("http", "ws") + "/ws", headers=evil)
                raise AssertionError("cross-origin websocket accepted")
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 403
            same = {"Origin": harness.url}
            assert (await post(s, harness.url + "/prompt", {"prompt": fakes.txt2img()}, headers=same))[
                0
            ] == 200
            assert (await post(s, harness.url + "/prompt", {"prompt": fakes.txt2img()}))[0] == 200
            assert (await get(s, harness.url + "/api/system_stats", headers=evil))[0] == 200

    asyncio.run(scenario())


def test_cors_mode_allows_other_origins(make_harness) -> None:
    server = make_harness(cors_origin="*").start()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(
                server.url + "/prompt",
                json={"prompt": fakes.txt2img()},
                headers={"Origin": "http://other.example"},
            ) as r:
                assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
            async with s.options(
                server.url + "/prompt",
                headers={"Origin": "http://other.example", "Access-Control-Request-Method": "POST"},
            ) as r:
                assert r.status == 200 and "POST" in r.headers["Access-Control-Allow-Methods"]

    asyncio.run(scenario())


def test_api_token_protects_routes_websocket_and_editor_and_the_cookie_lets_the_editor_in(
    make_harness,
) -> None:
    server = make_harness(api_token="s3cret-token").start()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            for path in (
                "/",
                "/api/object_info",
                "/api/system_stats",
                "/view?filename=x.png",
                "/assets/x.js",
            ):
                status, body = await get(s, server.url + path)
                assert status == 401 and body["error"]["type"] == "unauthorized", path
            assert (await post(s, server.url + "/prompt", {"prompt": fakes.txt2img()}))[0] == 401
            try:
                await s.ws_connect(server.url.replace("http", "ws") + "/ws")
                raise AssertionError("websocket without token accepted")
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 401
            assert (
                await get(s, server.url + "/api/system_stats", headers={"Authorization": "Bearer wrong"})
            )[0] == 401
            assert (
                await get(
                    s, server.url + "/api/system_stats", headers={"Authorization": "Bearer s3cret-token"}
                )
            )[0] == 200
        # The editor: open /?token=... once; the cookie carries the token for fetches and the websocket.
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as s:
            async with s.get(server.url + "/?token=s3cret-token") as r:
                assert r.status == 200 and "text/html" in r.content_type
            assert (await get(s, server.url + "/api/users"))[0] == 200
            ws = await s.ws_connect(server.url.replace("http", "ws") + "/ws")
            assert (await ws.receive_json())["type"] == "status"
            await ws.close()

    asyncio.run(scenario())


def test_deeply_nested_json_and_view_metadata(harness) -> None:
    header = json.dumps(
        {"__metadata__": {"ss_network_dim": "4"}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    ).encode()
    (harness.folders.models_dir / "loras").mkdir(parents=True, exist_ok=True)
    (harness.folders.models_dir / "loras" / "tiny.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + b"\0\0\0\0"
    )

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            deep = b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
            status, answer = await post(s, harness.url + "/prompt", data=deep)
            assert status == 400 and "error" in answer
            status, answer = await post(s, harness.url + "/api/settings/x", data=b"[" * 100_000)
            assert status == 400
            assert await get(s, harness.url + "/api/view_metadata/loras?filename=tiny.safetensors") == (
                200,
                {"ss_network_dim": "4"},
            )
            assert (await get(s, harness.url + "/api/view_metadata/loras?filename=none.safetensors"))[
                0
            ] == 404
            assert (await get(s, harness.url + "/api/view_metadata/loras?filename=..%2F..%2Fx"))[0] in (
                403,
                404,
            )
            assert (await get(s, harness.url + "/api/view_metadata/nope?filename=x"))[0] == 404
            assert await get(s, harness.url + "/api/models/loras") == (200, ["tiny.safetensors"])
            _, info = await get(s, harness.url + "/api/experiment/models/loras")
            assert info[0]["name"] == "tiny.safetensors" and info[0]["pathIndex"] == 0

    asyncio.run(scenario())
