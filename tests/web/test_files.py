"""/view, uploads and user data: only real images in, nothing read or written outside its folder."""

from __future__ import annotations

import asyncio
import io
import json
import os

import aiohttp
from PIL import Image

from .client import get, post

TRAVERSALS = [
    "../secret.txt",
    "..%2fsecret.txt",
    "%2e%2e/secret.txt",
    "/etc/passwd",
    "..\\secret.txt",
    "sub/../../secret.txt",
    "C:secret.txt",
    "a\x00b.png",
]


def png_bytes(size=(8, 8), colour=(255, 0, 0, 255)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", size, colour).save(out, format="PNG")
    return out.getvalue()


def form(data: bytes, filename: str, **fields: str) -> aiohttp.FormData:
    body = aiohttp.FormData()
    body.add_field("image", data, filename=filename, content_type="image/png")
    for key, value in fields.items():
        body.add_field(key, value)
    return body


def test_view_refuses_every_way_out_of_the_folder(harness) -> None:
    (harness.base / "secret.txt").write_text("top secret")
    outside = harness.base / "outside.png"
    outside.write_bytes(png_bytes())
    os.symlink(outside, harness.folders.output / "link.png")
    os.symlink(harness.base, harness.folders.output / "linkdir")

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            for name in TRAVERSALS + ["link.png"]:
                status, body = await get(
                    s, harness.url + "/view", params={"filename": name, "type": "output"}
                )
                assert status in (400, 403), (name, status)
                assert "secret" not in json.dumps(body) or "error" in body
            for params in (
                {"filename": "secret.txt", "subfolder": ".."},
                {"filename": "secret.txt", "subfolder": "linkdir"},
                {"filename": "secret.txt", "subfolder": "/"},
                {"filename": "x.png", "type": "models"},
            ):
                status, _ = await get(s, harness.url + "/view", params={"type": "output", **params})
                assert status in (400, 403), params
            assert (await get(s, harness.url + "/view", params={"filename": "missing.png"}))[0] == 404
            assert (await get(s, harness.url + "/view"))[0] == 400

    asyncio.run(scenario())


def test_svg_and_html_are_never_served_inline(harness) -> None:
    (harness.folders.output / "evil.svg").write_text("<svg onload='alert(1)'></svg>")
    (harness.folders.output / "evil.html").write_text("<script>alert(1)</script>")

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            for name in ("evil.svg", "evil.html"):
                async with s.get(harness.url + "/view", params={"filename": name}) as r:
                    assert r.status == 200
                    assert r.content_type == "application/octet-stream"
                    assert r.headers["Content-Disposition"].startswith("attachment")
                    assert r.headers["X-Content-Type-Options"] == "nosniff"
                    assert "sandbox" in r.headers["Content-Security-Policy"]

    asyncio.run(scenario())


def test_upload_accepts_real_images_renames_duplicates_and_sanitises_names(harness) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            url = harness.url + "/upload/image"
            status, body = await post(s, url, data=form(png_bytes(), "cat.png"))
            assert (status, body) == (200, {"name": "cat.png", "subfolder": "", "type": "input"})
            status, body = await post(s, url, data=form(png_bytes(colour=(0, 255, 0, 255)), "cat.png"))
            assert body["name"] == "cat (1).png"
            status, body = await post(
                s, url, data=form(png_bytes(colour=(0, 0, 255, 255)), "cat.png", overwrite="true")
            )
            assert body["name"] == "cat.png"
            assert Image.open(harness.folders.input / "cat.png").getpixel((0, 0))[:3] == (0, 0, 255)
            status, body = await post(s, url, data=form(png_bytes(), "../../evil.png"))
            assert status == 200 and body["name"] == "evil.png"
            assert (harness.folders.input / "evil.png").is_file()
            status, body = await post(s, url, data=form(png_bytes(), "pic.svg"))
            assert body["name"].endswith(".png")
            status, body = await post(
                s, url, data=form(png_bytes(), "sub.png", subfolder="masks", type="temp")
            )
            assert body == {"name": "sub.png", "subfolder": "masks", "type": "temp"}
            assert (harness.folders.temp / "masks" / "sub.png").is_file()
            for field in ({"subfolder": "../.."}, {"subfolder": "/tmp"}, {"type": "models"}):
                status, body = await post(s, url, data=form(png_bytes(), "x.png", **field))
                assert status in (400, 403) and "error" in body, field
            status, body = await post(
                s, url, data=form(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "a.png")
            )
            assert status == 400 and body["error"]["type"] == "invalid_image"
            status, body = await post(s, url, data=form(b"not an image at all", "a.png"))
            assert status == 400
            status, body = await post(s, url, body={"image": "x"})
            assert status == 400 and "error" in body
            # Mask: the mask's alpha goes onto the original image.
            mask = png_bytes(colour=(0, 0, 0, 10))
            status, body = await post(
                s,
                harness.url + "/upload/mask",
                data=form(
                    mask, "cat_mask.png", original_ref=json.dumps({"filename": "cat.png", "type": "input"})
                ),
            )
            assert status == 200
            merged = Image.open(harness.folders.input / body["name"])
            assert merged.mode == "RGBA" and merged.getpixel((0, 0)) == (0, 0, 255, 10)
            status, body = await post(
                s,
                harness.url + "/upload/mask",
                data=form(mask, "m.png", original_ref=json.dumps({"filename": "../../secret.png"})),
            )
            assert status == 403

    asyncio.run(scenario())


def test_uploads_over_the_limit_get_413(make_harness) -> None:
    server = make_harness(max_upload_bytes=64 * 1024).start()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            big = os.urandom(3 * 1024 * 1024)
            status, body = await post(s, server.url + "/upload/image", data=form(big, "big.png"))
            assert status == 413
            status, body = await post(
                s,
                server.url + "/prompt",
                data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                headers={"Content-Type": "application/json"},
            )
            assert status == 413
            status, features = await get(s, server.url + "/api/features")
            assert features["max_upload_size"] == 64 * 1024

    asyncio.run(scenario())


def test_userdata_lists_reads_writes_moves_deletes_and_stays_in_the_user_folder(harness) -> None:
    (harness.base / "user" / "secret.json").write_text("{}")

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            base = harness.url + "/api/userdata"
            listing = "?dir=workflows&recurse=true&split=false&full_info=true"
            assert await get(s, base + listing) == (200, [])
            assert await get(s, base + "/comfy.templates.json") == (200, [])
            assert await get(s, base + "/workflows%2F.index.json") == (200, {"favorites": []})
            async with s.get(base + "/user.css") as r:
                assert r.status == 200 and r.content_type == "text/css"
            workflow = json.dumps({"nodes": [], "links": []})
            status, info = await post(
                s, base + "/workflows%2Fmine.json?overwrite=false&full_info=true", data=workflow
            )
            assert status == 200 and info["path"] == "workflows/mine.json" and info["size"] == len(workflow)
            status, body = await post(s, base + "/workflows%2Fmine.json?overwrite=false", data=workflow)
            assert status == 409
            status, body = await post(s, base + "/workflows%2Fmine.json?overwrite=true", data="{}")
            assert (status, body) == (200, "workflows/mine.json")
            status, items = await get(s, base + listing)
            assert [i["path"] for i in items] == ["mine.json"]
            assert await get(s, base + "/workflows%2Fmine.json") == (200, {})
            status, info = await post(
                s, base + "/workflows%2Fmine.json/move/workflows%2Fdone%2Fmine.json?full_info=true"
            )
            assert status == 200 and info["path"] == "workflows/done/mine.json"
            assert await get(s, base + "?dir=workflows&recurse=true") == (200, ["done/mine.json"])
            async with s.delete(base + "/workflows%2Fdone%2Fmine.json") as r:
                assert r.status == 204
            assert (await get(s, base + "/workflows%2Fdone%2Fmine.json"))[0] == 404
            for name in (
                "..%2Fsecret.json",
                "%2E%2E%2Fsecret.json",
                "workflows%2F..%2F..%2Fsecret.json",
                "%2Fetc%2Fpasswd",
                "..%5Csecret.json",
            ):
                status, _ = await get(s, f"{base}/{name}")
                assert status in (400, 403, 404), name
                status, _ = await post(s, f"{base}/{name}", data="{}")
                assert status in (400, 403, 404), name
            assert (await get(s, base + "?dir=..%2F"))[0] in (400, 403)
            assert (harness.base / "user" / "secret.json").read_text() == "{}"

            # Settings: one key at a time, a bulk save, and a fresh user gets {}.
            assert await get(s, harness.url + "/api/settings") == (200, {})
            assert (await post(s, harness.url + "/api/settings/Comfy.SnapToGrid.GridSize", data="15"))[
                0
            ] == 200
            assert (await post(s, harness.url + "/api/settings", {"Comfy.TutorialCompleted": True}))[0] == 200
            assert await get(s, harness.url + "/api/settings") == (
                200,
                {"Comfy.SnapToGrid.GridSize": 15, "Comfy.TutorialCompleted": True},
            )
            assert await get(s, harness.url + "/api/settings/Comfy.SnapToGrid.GridSize") == (200, 15)
            assert (await post(s, harness.url + "/api/settings/x", data="NaN"))[0] == 400
            assert await get(s, harness.url + "/api/users") == (200, {"storage": "server", "migrated": True})

    asyncio.run(scenario())
