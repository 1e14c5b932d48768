"""The flows of ComfyUI's example API client scripts, written from their documented behaviour:

1. basic: POST /prompt ``{"prompt": ...}`` and nothing else;
2. websocket: connect ``/ws?clientId=<uuid4>``, POST /prompt with that ``client_id`` (and a
   client-chosen ``prompt_id``), read messages until ``executing`` with ``node: null`` for the prompt,
   then GET /history/{prompt_id} and GET /view for every image of every output node.
"""

from __future__ import annotations

import asyncio
import io
import json
import urllib.parse
import urllib.request
import uuid

import aiohttp
from PIL import Image

from . import fakes


def test_basic_example_queues_with_urllib(harness) -> None:
    data = json.dumps({"prompt": fakes.txt2img(seed=11)}).encode()
    request = urllib.request.Request(harness.url + "/prompt", data=data)
    with urllib.request.urlopen(request) as response:
        answer = json.loads(response.read())
    assert set(answer) >= {"prompt_id", "number", "node_errors"}


def test_websocket_example_flow_gets_the_images(harness) -> None:
    client_id = str(uuid.uuid4())
    prompt_id = str(uuid.uuid4())

    def queue_prompt(prompt: dict) -> dict:
        body = json.dumps({"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id}).encode()
        with urllib.request.urlopen(urllib.request.Request(harness.url + "/prompt", data=body)) as r:
            return json.loads(r.read())

    def get_history(pid: str) -> dict:
        with urllib.request.urlopen(f"{harness.url}/history/{pid}") as r:
            return json.loads(r.read())

    def get_image(filename: str, subfolder: str, folder_type: str) -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        with urllib.request.urlopen(f"{harness.url}/view?{query}") as r:
            return r.read()

    async def listen_until_done() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"ws://127.0.0.1:{harness.port}/ws?clientId={client_id}") as ws:
                loop = asyncio.get_running_loop()
                answer = await loop.run_in_executor(
                    None, queue_prompt, fakes.txt2img(seed=12, prefix="example")
                )
                assert answer["prompt_id"] == prompt_id
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue  # previews are binary
                    message = json.loads(msg.data)
                    if message["type"] == "executing":
                        data = message["data"]
                        if data["node"] is None and data["prompt_id"] == prompt_id:
                            return

    asyncio.run(listen_until_done())
    history = get_history(prompt_id)[prompt_id]
    images = {}
    for node_id, node_output in history["outputs"].items():
        images[node_id] = [
            get_image(i["filename"], i["subfolder"], i["type"]) for i in node_output.get("images", [])
        ]
    assert len(images["9"]) == 1
    assert Image.open(io.BytesIO(images["9"][0])).size == (32, 32)
