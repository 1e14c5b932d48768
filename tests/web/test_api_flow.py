"""End to end through HTTP + websocket: queue, events, outputs, history, jobs, caching, /view."""

from __future__ import annotations

import asyncio
import io
import json

import aiohttp
from PIL import Image

from . import fakes
from .client import Listener, decode_preview, get, post, queue


def test_txt2img_sends_comfyui_messages_in_order_and_saves_a_png_with_metadata(harness) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as s, Listener(s, harness.url) as ws:
            assert ws.messages[0] == (
                "status",
                {"status": {"exec_info": {"queue_remaining": 0}}, "sid": ws.sid},
            )
            assert ws.messages[1][1]["supports_preview_metadata"] is True
            workflow = {"id": "wf-1", "nodes": []}
            status, body = await post(
                s,
                harness.url + "/prompt",
                {
                    "prompt": fakes.txt2img(seed=5, steps=3),
                    "client_id": ws.sid,
                    "extra_data": {"extra_pnginfo": {"workflow": workflow}},
                },
            )
            assert status == 200 and body["node_errors"] == {} and isinstance(body["number"], (int, float))
            pid = body["prompt_id"]
            assert await ws.until_recorded(pid) == "execution_success"
            await ws.wait_for(
                lambda: any(
                    k == "executing" and d["node"] is None and d["prompt_id"] == pid for k, d in ws.messages
                )
            )
            kinds = [k for k, _ in ws.of(pid)]
            assert kinds[0] == "execution_start" and kinds[1] == "execution_cached"
            assert kinds.count("progress") == 3 and kinds.count("binary") == 3
            assert kinds.index("executing") < kinds.index("progress") < kinds.index("executed")
            assert kinds[-2:] == ["execution_success", "executing"]
            meta, jpeg = decode_preview(next(d for k, d in ws.of(pid) if k == "binary"))
            assert meta["node_id"] == "1" and meta["prompt_id"] == pid and meta["image_type"] == "image/jpeg"
            assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
            executed = next(d for k, d in ws.of(pid) if k == "executed")
            image = executed["output"]["images"][0]
            assert executed["node"] == "9" and image["type"] == "output"

            async with s.get(
                harness.url + "/view",
                params={"filename": image["filename"], "subfolder": image["subfolder"], "type": "output"},
            ) as r:
                assert r.status == 200 and r.content_type == "image/png"
                png = Image.open(io.BytesIO(await r.read()))
                assert png.size == (32, 32)
                assert json.loads(png.text["prompt"])["1"]["inputs"]["seed"] == 5
                assert json.loads(png.text["workflow"]) == workflow
            async with s.get(
                harness.url + "/api/view", params={"filename": image["filename"], "preview": "webp;50"}
            ) as r:
                assert r.status == 200 and r.content_type == "image/webp"

            status, history = await get(s, f"{harness.url}/history/{pid}")
            entry = history[pid]
            assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
            assert entry["outputs"]["9"]["images"][0]["filename"] == image["filename"]
            assert entry["prompt"][1] == pid
            status, jobs = await get(
                s, harness.url + "/api/jobs?status=completed,failed,cancelled&limit=64&offset=0"
            )
            job = jobs["jobs"][0]
            assert job["id"] == pid and job["status"] == "completed" and job["outputs_count"] == 1
            assert job["preview_output"]["nodeId"] == "9" and job["preview_output"]["mediaType"] == "images"
            assert job["workflow_id"] == "wf-1" and isinstance(job["create_time"], int)
            assert jobs["pagination"] == {"offset": 0, "limit": 64, "total": 1, "has_more": False}
            status, detail = await get(s, f"{harness.url}/api/jobs/{pid}")
            assert detail["outputs"]["9"]["images"][0] == image
            assert detail["workflow"]["extra_data"]["extra_pnginfo"]["workflow"] == workflow

    asyncio.run(scenario())


def test_a_repeated_prompt_is_reported_as_cached(harness) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as s, Listener(s, harness.url) as ws:
            first = await queue(s, harness.url, fakes.txt2img(seed=9), client_id=ws.sid)
            await ws.until_end(first)
            second = await queue(s, harness.url, fakes.txt2img(seed=9), client_id=ws.sid)
            await ws.until_end(second)
            cached = next(d for k, d in ws.of(second) if k == "execution_cached")
            assert set(cached["nodes"]) == {"1", "9"} or set(cached["nodes"]) >= {"1"}
            assert not any(k == "progress" for k, _ in ws.of(second))

    asyncio.run(scenario())


def test_validation_errors_answer_400_in_comfyui_shape(harness) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            prompt = fakes.txt2img()
            prompt["1"]["inputs"]["steps"] = 10_000
            status, body = await post(s, harness.url + "/api/prompt", {"prompt": prompt})
            assert status == 400
            assert body["error"]["type"] == "prompt_outputs_failed_validation"
            assert body["node_errors"]["1"]["class_type"] == "MakeImage"
            assert body["node_errors"]["1"]["dependent_outputs"] == ["9"]
            # Prompt-level errors: ComfyUI's types and exact messages (clients match on them).
            for prompt, error in (
                ({"1": {"class_type": "NoSuchNode", "inputs": {}}},
                 ("invalid_prompt", "Cannot execute because node NoSuchNode does not exist.", "Node ID '#1'")),
                ({**fakes.txt2img(), "7": {"inputs": {}}},
                 ("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                  "Node ID '#7'")),
                ({}, ("prompt_no_outputs", "Prompt has no outputs", None)),
                ({"1": fakes.txt2img()["1"]}, ("prompt_no_outputs", "Prompt has no outputs", None)),
            ):
                status, body = await post(s, harness.url + "/api/prompt", {"prompt": prompt})
                assert status == 400 and body["node_errors"] == {}, prompt
                got = body["error"]
                assert (got["type"], got["message"]) == error[:2], prompt
                assert error[2] is None or got["details"] == error[2]
            status, body = await post(s, harness.url + "/prompt", {"client_id": "x"})
            assert status == 400 and body["error"]["type"] == "no_prompt" and body["node_errors"] == {}
            status, queue_state = await get(s, harness.url + "/queue")
            assert queue_state == {"queue_running": [], "queue_pending": []}

    asyncio.run(scenario())


def test_wait_true_answers_with_outputs_and_status_endpoint_tells_states_apart(harness) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            status, body = await post(
                s, harness.url + "/prompt?wait=true&timeout=30", {"prompt": fakes.txt2img(seed=3)}
            )
            assert status == 200 and body["status"] == "success"
            assert body["outputs"]["9"]["images"][0]["type"] == "output"
            pid = body["prompt_id"]
            assert (await get(s, f"{harness.url}/prompt/{pid}/status")) == (
                200,
                {"prompt_id": pid, "status": "success"},
            )
            assert (await get(s, f"{harness.url}/prompt/nope/status"))[0] == 404
            # Unknown ids answer 200 {} as in ComfyUI (clients poll until the id appears), also under /api.
            assert (await get(s, f"{harness.url}/history/nope")) == (200, {})
            assert (await get(s, f"{harness.url}/api/history/nope")) == (200, {})
            assert (await get(s, f"{harness.url}/api/jobs/nope"))[0] == 404

            status, body = await post(
                s, harness.url + "/prompt?wait=true&timeout=30", {"prompt": fakes.txt2img(seed=4, fail=True)}
            )
            assert status == 200 and body["status"] == "error"
            assert "planned failure" in body["error"]["exception_message"]
            assert body["error"]["node_type"] == "Fail"
            status, jobs = await get(s, harness.url + "/api/jobs?status=failed")
            assert "planned failure" in jobs["jobs"][0]["execution_error"]["exception_message"]

            # Still running: /history/{id} answers {} (not 404), the status says running, wait times out.
            status, body = await post(
                s, harness.url + "/prompt?wait=true&timeout=0.2", {"prompt": fakes.txt2img(seed=5, gate="w")}
            )
            assert status == 202 and body["timed_out"] is True and body["status"] in ("pending", "running")
            pid = body["prompt_id"]
            assert (await get(s, f"{harness.url}/history/{pid}")) == (200, {})
            fakes.GATES.setdefault("w", __import__("threading").Event()).set()
            status, body = await post(s, harness.url + "/prompt?wait=1", {"prompt": fakes.txt2img(seed=6)})
            assert body["status"] == "success"
            assert (await get(s, f"{harness.url}/prompt/{pid}/status"))[1]["status"] == "success"

    asyncio.run(scenario())


def test_partial_execution_targets_run_only_the_named_outputs(harness) -> None:
    prompt = fakes.txt2img(seed=31, prefix="left")
    prompt["10"] = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "right"}}

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            status, body = await post(
                s, harness.url + "/prompt?wait=true", {"prompt": prompt, "partial_execution_targets": ["10"]}
            )
            assert status == 200 and body["status"] == "success"
            assert list(body["outputs"]) == ["10"]
            status, body = await post(
                s, harness.url + "/prompt", {"prompt": prompt, "partial_execution_targets": ["nope"]}
            )
            assert status == 400 and body["error"]["type"] == "prompt_no_outputs"

    asyncio.run(scenario())
