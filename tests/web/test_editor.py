"""The editor's boot endpoints (docs: shared/frontend-api.md §2.1, §9) and its static files."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from web.services import Plugin

from .client import get, post

BOOT_JSON = [
    "/api/features",
    "/api/users",
    "/api/system_stats",
    "/api/settings",
    "/api/userdata?dir=workflows&recurse=true&split=false&full_info=true",
    "/api/userdata?dir=subgraphs&recurse=true&split=false&full_info=true",
    "/api/i18n",
    "/api/extensions",
    "/api/userdata/comfy.templates.json",
    "/api/object_info",
    "/api/global_subgraphs",
    "/api/jobs?status=in_progress,pending&limit=200&offset=0",
    "/api/jobs?status=completed,failed,cancelled&limit=64&offset=0",
    "/api/experiment/models",
    "/api/workflow_templates",
    "/templates/index.json",
    "/templates/index_logo.json",
    "/api/userdata/workflows%2F.index.json",
    "/internal/folder_paths",
    "/api/embeddings",
    "/api/models",
    "/api/prompt",
]


@pytest.fixture
def editor_server(make_harness, tmp_path):
    server = make_harness()
    pack = tmp_path / "custom_nodes" / "probe_pack"
    (pack / "web" / "sub").mkdir(parents=True)
    (pack / "web" / "probe.js").write_text("export {}")
    (pack / "web" / "sub" / "helper.js").write_text("export {}")
    (pack / "web" / "probe.css").write_text("body{}")
    (pack / "locales" / "en").mkdir(parents=True)
    (pack / "locales" / "en" / "main.json").write_text(json.dumps({"greeting": "hi"}))
    (pack / "locales" / "en" / "nodeDefs.json").write_text(json.dumps({"Probe": {"display_name": "Probe"}}))
    (pack / "example_workflows").mkdir()
    (pack / "example_workflows" / "demo.json").write_text(json.dumps({"nodes": []}))
    server.plugins.append(Plugin("probe_pack", pack, pack / "web"))
    return server.start()


def test_every_boot_endpoint_answers_200_json_on_a_fresh_install(editor_server) -> None:
    base = editor_server.url

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            for path in BOOT_JSON:
                async with s.get(base + path, headers={"Comfy-User": ""}) as r:
                    assert r.status == 200, path
                    assert r.content_type == "application/json", path
                    await r.json()
            _, features = await get(s, base + "/api/features")
            assert features == {"supports_preview_metadata": True, "max_upload_size": 100 * 1024 * 1024}
            _, stats = await get(s, base + "/api/system_stats")
            assert "--disable-api-nodes" in stats["system"]["argv"]
            assert stats["system"]["comfyui_version"] and stats["devices"][0]["type"] == "cpu"
            assert isinstance(stats["system"]["ram_total"], int)
            _, extensions = await get(s, base + "/api/extensions")
            assert "/extensions/probe_pack/probe.js" in extensions
            assert "/extensions/probe_pack/sub/helper.js" in extensions
            assert not any(e.endswith(".css") for e in extensions)
            assert any(e.startswith("/extensions/core/") for e in extensions)
            assert "/extensions/plexus-core/default_graph.js" in extensions
            async with s.get(base + "/extensions/plexus-core/default_graph.js") as r:
                assert r.status == 200 and "plexus_demo_sd15_txt2img.json" in await r.text()
            async with s.get(base + "/extensions/probe_pack/sub/helper.js") as r:
                assert r.status == 200 and r.content_type == "application/javascript"
            async with s.get(base + "/extensions/probe_pack/probe.css") as r:
                assert r.status == 200 and r.content_type == "text/css"
            assert (await get(s, base + "/extensions/probe_pack/..%2F..%2Fsecret"))[0] == 404
            _, i18n = await get(s, base + "/api/i18n")
            assert i18n == {"en": {"greeting": "hi", "nodeDefs": {"Probe": {"display_name": "Probe"}}}}
            assert await get(s, base + "/api/workflow_templates") == (200, {"probe_pack": ["demo"]})
            assert await get(s, base + "/api/workflow_templates/probe_pack/demo.json") == (200, {"nodes": []})
            _, index = await get(s, base + "/templates/index.json")
            first = index[0]["templates"][0]
            assert (
                first["name"] == "plexus_demo_sd15_txt2img" and first["title"] == "Plexus demo: SD1.5 txt2img"
            )
            _, localized = await get(s, base + "/templates/index.fr.json")
            assert localized[0]["templates"][0]["name"] == "plexus_demo_sd15_txt2img"
            _, workflow = await get(s, base + "/templates/plexus_demo_sd15_txt2img.json")
            assert {n["type"] for n in workflow["nodes"]} >= {
                "CheckpointLoaderSimple",
                "KSampler",
                "SaveImage",
            }
            async with s.get(base + "/templates/plexus_demo_sd15_txt2img-1.webp") as r:
                assert r.status == 200 and r.content_type == "image/webp"
            _, info = await get(s, base + "/api/object_info")
            assert info["MakeImage"]["input_order"]["required"] == ["seed", "steps", "width", "height"]
            _, one = await get(s, base + "/object_info/SaveImage")
            assert list(one) == ["SaveImage"] and one["SaveImage"]["output_node"] is True
            assert (await get(s, base + "/object_info/Nope"))[0] == 404
            _, models = await get(s, base + "/api/experiment/models")
            assert {"name", "folders"} <= set(models[0]) and "checkpoints" in {m["name"] for m in models}
            assert await get(s, base + "/api/experiment/models/checkpoints") == (200, [])
            assert await get(s, base + "/api/models/checkpoints") == (200, [])
            assert (await get(s, base + "/api/models/nope"))[0] == 404

    asyncio.run(scenario())


def test_the_editor_page_and_its_static_files(editor_server) -> None:
    base = editor_server.url

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.get(base + "/") as r:
                html = await r.text()
                assert r.status == 200 and r.content_type == "text/html" and "vue-app" in html
                assert r.headers["Cache-Control"] == "no-cache"
            script = html.split('<script type="module" crossorigin src="./')[1].split('"')[0]
            async with s.get(f"{base}/{script}") as r:
                assert r.status == 200 and r.content_type == "application/javascript"
                assert "immutable" in r.headers["Cache-Control"]
                modified = r.headers["Last-Modified"]
            async with s.get(f"{base}/{script}", headers={"If-Modified-Since": modified}) as r:
                assert r.status == 304
            for path, kind in (
                ("/user.css", "text/css"),
                ("/api/userdata/user.css", "text/css"),
                ("/favicon.ico", None),
                ("/materialdesignicons.min.css", "text/css"),
                ("/scripts/app.js", "application/javascript"),
            ):
                async with s.get(base + path) as r:
                    assert r.status == 200, path
                    assert kind is None or r.content_type == kind, path
            for path in ("/..%2F..%2Fetc%2Fpasswd", "/assets/..%2F..%2F..%2Fsecret", "/nope.js"):
                assert (await get(s, base + path))[0] == 404, path
            # API routes win over static files of the same name.
            assert (await get(s, base + "/prompt"))[1] == {"exec_info": {"queue_remaining": 0}}

    asyncio.run(scenario())


def test_queue_and_history_shapes_for_api_clients(editor_server) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            assert await get(s, editor_server.url + "/queue") == (
                200,
                {"queue_running": [], "queue_pending": []},
            )
            assert await get(s, editor_server.url + "/api/history?max_items=64") == (200, {})
            assert (
                await post(s, editor_server.url + "/api/free", {"unload_models": True, "free_memory": True})
            )[0] == 200
            _, jobs = await get(s, editor_server.url + "/api/jobs")
            assert jobs == {
                "jobs": [],
                "pagination": {"offset": 0, "limit": 200, "total": 0, "has_more": False},
            }

    asyncio.run(scenario())
