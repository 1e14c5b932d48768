"""main.py's server wiring: the real registry (built-ins + example plugin), engine, store and worker
behind the real web app, in-process on a free port."""
from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import aiohttp

import main


def test_server_wiring(tmp_path: Path, capsys) -> None:
    from web.server import start

    args = main.parse_args(["--port", "0", "--queue-db", "memory", "--output-directory", str(tmp_path / "out"),
                            "--input-directory", str(tmp_path / "in"), "--temp-directory", str(tmp_path / "tmp"),
                            "--user-directory", str(tmp_path / "user"), "--models-directory", str(tmp_path / "m")])
    app = main.build_app(args)
    services, settings = main.build_server(app)
    finished = threading.Event()   # set once the store holds a finished prompt (history written)
    services.store.subscribe(lambda: finished.set() if services.store.history() else None)
    prompt = {"1": {"class_type": "PrimitiveString", "inputs": {"value": "via server"}},
              "2": {"class_type": "ExampleSaveText", "inputs": {"text": ["1", 0], "filename_prefix": "srv"}}}

    async def scenario() -> None:
        runner, port = await start(services, settings)
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(url + "/object_info") as response:
                    info = await response.json()
                assert info["PrimitiveInt"]["python_module"] == "nodes"
                assert info["PrimitiveInt"]["display_name"] == "Int"
                assert info["ExampleSaveText"]["python_module"] == "custom_nodes.example_plexus_plugin"
                async with session.get(url + "/api/extensions") as response:
                    extensions = await response.json()
                assert "/extensions/example_plexus_plugin/example.js" in extensions
                async with session.get(url + "/extensions/example_plexus_plugin/example.js") as response:
                    assert response.status == 200 and "registerExtension" in await response.text()
                async with session.post(url + "/prompt", json={"prompt": prompt}) as response:
                    assert response.status == 200, await response.text()
                    prompt_id = (await response.json())["prompt_id"]
                assert await asyncio.get_running_loop().run_in_executor(None, finished.wait, 30)
                async with session.get(url + f"/history/{prompt_id}") as response:
                    history = await response.json()
                assert history[prompt_id]["outputs"]["2"]["files"][0]["filename"] == "srv_00001_.txt"
        finally:
            await runner.cleanup()

    try:
        asyncio.run(scenario())
    finally:
        services.worker.stop()
    assert (tmp_path / "out" / "srv_00001_.txt").read_text() == "via server"
    assert (tmp_path / "m" / "checkpoints").is_dir()
