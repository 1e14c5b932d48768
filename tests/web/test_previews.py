"""Latent previews go over the websocket only when asked for, as in ComfyUI: its --preview-method
defaults to none, and the editor's "Live preview method" setting sends ``extra_data["preview_method"]``
per prompt ("default" meaning the server's own)."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import pytest
from PIL import Image

from execution.executor import Engine
from execution.registry import NodeRegistry

from . import fakes
from .client import Listener, decode_preview, get, post
from .test_real_txt2img import demo_prompt


async def _run(s: aiohttp.ClientSession, url: str, ws: Listener, prompt: dict, extra_data: dict) -> str:
    status, body = await post(s, url + "/prompt", {"prompt": prompt, "client_id": ws.sid, "extra_data": extra_data})
    assert status == 200, body
    assert await ws.until_recorded(body["prompt_id"], timeout_s=300) == "execution_success"
    return body["prompt_id"]


def _binary(ws: Listener, prompt_id: str) -> list[bytes]:
    return [d for k, d in ws.of(prompt_id) if k == "binary"]


def test_a_client_collecting_every_binary_frame_gets_only_the_saved_images_by_default(real_harness) -> None:
    """comfy-api-simplified's way: every binary frame during the run is an image; the saved PNGs come
    from /history and /view. With the server's defaults (main.py) no preview frame is sent."""
    server = real_harness

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s, Listener(s, server.url) as ws:
            pid = await _run(s, server.url, ws, demo_prompt(steps=3), {})
            assert [k for k, _ in ws.messages if k == "binary"] == []
            assert [d["value"] for k, d in ws.of(pid) if k == "progress" and d["node"] == "3"] == [1, 2, 3]
            _, history = await get(s, f"{server.url}/history/{pid}")
            images = [i for out in history[pid]["outputs"].values() for i in out.get("images", [])]
            assert len(images) == 1
            async with s.get(server.url + "/view", params=images[0]) as r:
                assert Image.open(io.BytesIO(await r.read())).format == "PNG"

            # The editor's setting asks for previews for one prompt: one JPEG per step, for that prompt.
            prompt = demo_prompt(steps=3)
            prompt["3"]["inputs"]["seed"] += 1
            pid = await _run(s, server.url, ws, prompt, {"preview_method": "latent2rgb"})
            frames = _binary(ws, pid)
            assert len(frames) == 3 == len([k for k, _ in ws.messages if k == "binary"])
            meta, jpeg = decode_preview(frames[0])
            assert meta["node_id"] == "3" and meta["prompt_id"] == pid
            assert Image.open(io.BytesIO(jpeg)).format == "JPEG"

            # "default" is the server's setting (none here).
            prompt["3"]["inputs"]["seed"] += 1
            pid = await _run(s, server.url, ws, prompt, {"preview_method": "default"})
            assert _binary(ws, pid) == []

    asyncio.run(scenario())


def test_a_prompt_can_turn_off_the_servers_previews(harness) -> None:
    """The fake server starts as with --preview-method auto; "none" in a prompt's extra_data turns the
    previews off for that prompt only, and "default" or an unknown value keeps the server's."""

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s, Listener(s, harness.url) as ws:
            counts = {}
            for seed, asked in enumerate(("none", "default", "bogus", None)):
                extra = {} if asked is None else {"preview_method": asked}
                pid = await _run(s, harness.url, ws, fakes.txt2img(seed=40 + seed, steps=2), extra)
                counts[asked] = len(_binary(ws, pid))
            assert counts == {"none": 0, "default": 2, "bogus": 2, None: 2}

    asyncio.run(scenario())


def test_the_engine_refuses_an_unknown_server_preview_method() -> None:
    with pytest.raises(ValueError, match="preview_method"):
        Engine(NodeRegistry(), preview_method="fast")


def test_main_defaults_to_no_previews_like_comfyui() -> None:
    import main

    assert main.parse_args([]).preview_method == "none"
    assert main.parse_args(["--preview-method", "taesd"]).preview_method == "taesd"
    assert main.parse_args(["serve", "--preview-method", "auto"]).preview_method == "auto"
