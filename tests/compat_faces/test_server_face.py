"""server.PromptServer as packs use it: routes at import, messages to the editor, on-prompt hooks."""
from __future__ import annotations

import asyncio
import json
import struct

import aiohttp
import pytest

from .harness import FaceHarness, ServerThread

MESSAGING_PACK = {"__init__.py": """
    import server
    from server import PromptServer
    from aiohttp import web

    routes = PromptServer.instance.routes

    @routes.get("/messaging_pack/hello")
    async def hello(request):
        return web.json_response({"supports": PromptServer.instance.supports})

    @routes.post("/messaging_pack/echo")
    async def echo(request):
        data = await request.json()
        PromptServer.instance.send_sync("messaging_pack.echo", data)
        return web.Response(status=200)

    seen_prompts = []

    def on_prompt(json_data):
        seen_prompts.append(json_data.get("client_id"))
        json_data["prompt"]["1"]["inputs"]["text"] = "rewritten"
        return json_data

    PromptServer.instance.add_on_prompt_handler(on_prompt)
    PromptServer.instance.add_on_prompt_handler(lambda data: 1 / 0)     # a broken handler is skipped

    class Notify:
        @classmethod
        def INPUT_TYPES(s):
            return {"required": {"text": ("STRING", {"default": "hi"})}, "hidden": {"unique_id": "UNIQUE_ID"}}
        RETURN_TYPES = ()
        FUNCTION = "doit"
        OUTPUT_NODE = True
        CATEGORY = "test"

        def doit(self, text, unique_id):
            server = PromptServer.instance
            server.send_sync("messaging_pack.text", {"node": unique_id, "text": text,
                                                      "last_node_id": server.last_node_id}, server.client_id)
            server.send_progress_text("working", unique_id, server.client_id)
            return {"ui": {"text": [text]}}

    NODE_CLASS_MAPPINGS = {"Notify": Notify}
    WEB_DIRECTORY = "./js"
""", "js/messaging.js": "import { app } from '../../scripts/app.js';\\napp.registerExtension({name: 'messaging'});\\n"}


@pytest.fixture
def served(tmp_path):
    harness = FaceHarness(tmp_path, with_web_api=True)
    harness.pack("messaging_pack", MESSAGING_PACK)
    harness.load()
    assert harness.plugin("messaging_pack").is_ok, harness.report.lines()
    server = ServerThread(harness).start()
    yield harness, server
    server.stop()
    harness.close()


def test_prompt_server_instance_routes_messages_and_prompt_hooks(served) -> None:
    harness, server = served

    async def scenario():
        messages: list = []
        async with aiohttp.ClientSession() as session:
            for prefix in ("", "/api"):
                async with session.get(server.url + prefix + "/messaging_pack/hello") as response:
                    assert response.status == 200
                    assert (await response.json())["supports"] == ["custom_nodes_from_web"]
            async with session.get(server.url + "/extensions/messaging_pack/messaging.js") as response:
                assert response.status == 200 and "registerExtension" in await response.text()
            async with session.ws_connect(server.url + "/ws?clientId=me") as ws:
                async with session.post(server.url + "/api/messaging_pack/echo", json={"x": 1}) as response:
                    assert response.status == 200
                body = {"prompt": {"1": {"class_type": "Notify", "inputs": {"text": "original"}}}, "client_id": "me"}
                async with session.post(server.url + "/prompt", json=body) as response:
                    assert response.status == 200, await response.text()
                    prompt_id = (await response.json())["prompt_id"]
                while True:
                    message = await asyncio.wait_for(ws.receive(), 30)
                    if message.type == aiohttp.WSMsgType.BINARY:
                        messages.append(("binary", message.data))
                        continue
                    data = json.loads(message.data)
                    messages.append((data["type"], data["data"]))
                    if data["type"] == "execution_success":
                        break
            for _ in range(100):   # the worker stores the history entry just after execution_success
                async with session.get(server.url + f"/history/{prompt_id}") as response:
                    history = await response.json()
                if history:
                    break
                await asyncio.sleep(0.05)
        return messages, history

    messages, history = asyncio.run(scenario())
    kinds = dict((kind, data) for kind, data in messages if kind != "binary")
    assert kinds["messaging_pack.echo"] == {"x": 1}
    assert kinds["messaging_pack.text"] == {"node": "1", "text": "rewritten", "last_node_id": "1"}
    frames = [data for kind, data in messages if kind == "binary"]
    node = b"1"
    assert struct.pack(">II", 3, len(node)) + node + b"working" in frames
    pack = __import__("sys").modules[str(harness.plugin("messaging_pack").path).replace(".", "_x_")]
    assert pack.seen_prompts == ["me"]
    (entry,) = history.values()
    assert entry["outputs"]["1"]["text"] == ["rewritten"]
