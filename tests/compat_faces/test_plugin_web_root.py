"""Packs that find "ComfyUI's folder" from the ``server`` module and copy their JavaScript into its
``web/extensions/`` (ComfyUI-Custom-Scripts on an old server, efficiency-nodes' clean-up) write into the
per-user ``Folders.plugin_root``, never into Plexus's source tree, and what they copy there is served."""
from __future__ import annotations

import asyncio

import aiohttp

import main

from .harness import FACES_DIR, FaceHarness, ServerThread

COPYING_PACK = {
    "__init__.py": """
import inspect
import os
import shutil

from server import PromptServer

comfy_dir = os.path.dirname(inspect.getfile(PromptServer))
destination = os.path.join(comfy_dir, "web", "extensions", "copying-pack")
os.makedirs(os.path.dirname(destination), exist_ok=True)
shutil.copytree(os.path.join(os.path.dirname(__file__), "js"), destination, dirs_exist_ok=True)
workflows = os.path.join(comfy_dir, "copying-pack-workflows")     # the pack's own data, next to ComfyUI
os.makedirs(workflows, exist_ok=True)
COMFY_DIR = comfy_dir
NODE_CLASS_MAPPINGS = {}
""",
    "js/copied.js": "export const copied = true;\n",
}


def test_copied_web_files_go_to_the_user_folder_and_are_served(tmp_path) -> None:
    harness = FaceHarness(tmp_path, with_web_api=True)
    try:
        harness.pack("copying_pack", COPYING_PACK)
        harness.load()
        assert harness.plugin("copying_pack").is_ok, harness.plugin("copying_pack").traceback
        root = harness.folders.plugin_root
        copied = harness.folders.plugin_web_extensions / "copying-pack" / "copied.js"
        assert copied.is_file() and (root / "copying-pack-workflows").is_dir()
        assert root.is_relative_to(harness.folders.user)
        assert not (FACES_DIR / "web").exists() and not (FACES_DIR / "copying-pack-workflows").exists()

        extra = main.copied_web_extensions(harness.folders, {"copying_pack"})
        assert [(p.name, p.web_directory) for p in extra] == [("copying-pack", copied.parent)]
        server = ServerThread(harness)
        server.services.plugins.extend(extra)
        server.start()
        try:
            async def fetch() -> tuple:
                async with aiohttp.ClientSession() as session:
                    async with session.get(server.url + "/extensions/copying-pack/copied.js") as response:
                        body = (response.status, await response.text())
                    async with session.get(server.url + "/extensions") as response:
                        listed = await response.json()
                return body, listed

            (status, text), listed = asyncio.run(fetch())
            assert status == 200 and "copied = true" in text
            assert "/extensions/copying-pack/copied.js" in listed
        finally:
            server.stop()
    finally:
        harness.close()
