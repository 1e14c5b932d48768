"""txt2img through the whole stack (built-in nodes, tiny random-weight SD1.5 checkpoint) over HTTP + ws."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import aiohttp
from PIL import Image

from .client import Listener, get, post

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "txt2img_api.json"


def demo_prompt(steps: int = 3, size: int = 64) -> dict:
    prompt = json.loads(EXAMPLE.read_text())
    prompt["3"]["inputs"]["steps"] = steps
    prompt["5"]["inputs"].update(width=size, height=size)
    return prompt


def test_sd15_txt2img_with_messages_previews_and_png_metadata(real_harness) -> None:
    server = real_harness

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s, Listener(s, server.url) as ws:
            _, info = await get(s, server.url + "/api/object_info/CheckpointLoaderSimple")
            assert (
                server.DEMO_CHECKPOINT in info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
            )
            status, body = await post(
                s,
                server.url + "/api/prompt",
                {
                    "prompt": demo_prompt(),
                    "client_id": ws.sid,
                    "extra_data": {"extra_pnginfo": {"workflow": {"id": "demo"}}},
                },
            )
            assert status == 200, body
            pid = body["prompt_id"]
            assert await ws.until_recorded(pid, timeout_s=300) == "execution_success", ws.of(pid)[-3:]
            kinds = [k for k, _ in ws.of(pid)]
            assert kinds[:2] == ["execution_start", "execution_cached"]
            progress = [d for k, d in ws.of(pid) if k == "progress" and d["node"] == "3"]
            assert [p["value"] for p in progress] == [1, 2, 3] and progress[0]["max"] == 3
            executed = next(d for k, d in ws.of(pid) if k == "executed")
            image = executed["output"]["images"][0]
            async with s.get(server.url + "/api/view", params=image) as r:
                png = Image.open(io.BytesIO(await r.read()))
            assert png.size[0] == png.size[1] > 0  # the tiny VAE upsamples less than the real one
            assert json.loads(png.text["prompt"])["4"]["inputs"]["ckpt_name"] == server.DEMO_CHECKPOINT
            assert json.loads(png.text["workflow"]) == {"id": "demo"}
            # The same prompt again: every node is cached, nothing is sampled.
            status, body = await post(
                s, server.url + "/api/prompt", {"prompt": demo_prompt(), "client_id": ws.sid}
            )
            again = body["prompt_id"]
            assert await ws.until_recorded(again, timeout_s=300) == "execution_success"
            cached = next(d for k, d in ws.of(again) if k == "execution_cached")
            assert {"3", "4", "5", "6", "7", "8"} <= set(cached["nodes"])
            assert not any(k == "progress" for k, _ in ws.of(again))

    asyncio.run(scenario())


def test_the_demo_template_names_the_checkpoint_main_writes() -> None:
    from diffusion.demo import DEMO_CHECKPOINT_NAME

    from .conftest import RealHarness

    template = json.loads(
        (
            Path(__file__).resolve().parents[2] / "web" / "templates" / "plexus_demo_sd15_txt2img.json"
        ).read_text()
    )
    loader = next(n for n in template["nodes"] if n["type"] == "CheckpointLoaderSimple")
    assert loader["widgets_values"] == [DEMO_CHECKPOINT_NAME] == [RealHarness.DEMO_CHECKPOINT]
