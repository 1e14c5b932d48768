"""The editor in headless Chromium with a custom-node pack's JavaScript extension loaded (issue 19): a small pack
written like rgthree / ComfyUI-Custom-Scripts (``WEB_DIRECTORY`` JS that imports the editor's ``app`` and ``api``
modules, registers an extension, patches its node's ``onNodeCreated``, fetches a route the pack added to
``PromptServer.instance.routes`` and listens for a ``send_sync`` event from its node), installed in
``custom_nodes/`` of the whole Plexus stack. The editor must boot with 0 console errors, page errors, failed
requests or HTTP errors, the extension must run, and the node's event must reach it.

Opt-in like tests/web/test_browser.py (``PLEXUS_BROWSER_TESTS=1``, Debian's ``chromium``, Playwright)."""
from __future__ import annotations

import json
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from tests.compat_faces.harness import FACES_DIR, forget_faces

from .conftest import RealHarness
from .test_browser import IDLE_MS, PageLog, browser, shots  # noqa: F401 - the fixtures, shared

pytestmark = pytest.mark.browser

PACK_INIT = '''
from aiohttp import web
from server import PromptServer

WEB_DIRECTORY = "./js"


@PromptServer.instance.routes.get("/style_pack/info")
async def info(request):
    return web.json_response({"pack": "style_pack", "nodes": list(NODE_CLASS_MAPPINGS)})


class StylePackPing:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hello"})}}

    RETURN_TYPES = ()
    FUNCTION = "ping"
    OUTPUT_NODE = True
    CATEGORY = "style_pack"

    def ping(self, text):
        PromptServer.instance.send_sync("style_pack.ping", {"text": text})
        return {}


NODE_CLASS_MAPPINGS = {"StylePackPing": StylePackPing}
NODE_DISPLAY_NAME_MAPPINGS = {"StylePackPing": "Style Pack Ping"}
'''

PACK_JS = '''
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const state = { setup: false, info: null, pings: [], created: 0 };
window.__stylePack = state;

app.registerExtension({
  name: "style_pack.Extension",
  async setup() {
    const response = await api.fetchApi("/style_pack/info");
    state.info = await response.json();
    api.addEventListener("style_pack.ping", (event) => state.pings.push(event.detail));
    state.setup = true;
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "StylePackPing") return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      this.addWidget("button", "style pack", null, () => {});
      state.created += 1;
      return result;
    };
  },
});
'''


def _queue(url: str, prompt: dict, client_id: str) -> None:
    body = json.dumps({"prompt": prompt, "client_id": client_id}).encode()
    request = urllib.request.Request(url + "/prompt", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


@pytest.fixture
def pack_harness(tmp_path: Path):
    pack = tmp_path / "custom_nodes" / "style_pack"
    (pack / "js").mkdir(parents=True)
    (pack / "__init__.py").write_text(textwrap.dedent(PACK_INIT))
    (pack / "js" / "style_pack.js").write_text(textwrap.dedent(PACK_JS))
    server = RealHarness(tmp_path).start()
    yield server
    server.stop()
    forget_faces()                       # the pack put the ComfyUI faces on sys.path: later tests start clean
    if str(FACES_DIR) in sys.path:
        sys.path.remove(str(FACES_DIR))


def test_editor_boots_clean_with_a_packs_js_extension(pack_harness, browser, shots) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    log = PageLog(page)
    served: list[str] = []
    page.on("response", lambda r: served.append(r.url) if "/extensions/style_pack/" in r.url else None)
    page.goto(pack_harness.url + "/")
    page.wait_for_function("() => window.app && window.app.graph", timeout=60_000)
    page.wait_for_function("() => window.__stylePack && window.__stylePack.setup", timeout=30_000)
    page.wait_for_timeout(IDLE_MS)
    page.screenshot(path=str(shots / "pack-js-boot.png"))
    assert log.problems == [], "the editor did not boot clean with the pack:\n" + "\n".join(log.problems)
    assert any(url.endswith("/extensions/style_pack/style_pack.js") for url in served)
    assert page.evaluate("() => window.__stylePack.info") == {"pack": "style_pack", "nodes": ["StylePackPing"]}

    # The extension's onNodeCreated patch runs on the node the pack registered.
    widgets = page.evaluate("""() => {
        const node = window.LiteGraph.createNode("StylePackPing");
        window.app.graph.add(node);
        return node.widgets.map(w => w.name);
    }""")
    assert widgets == ["text", "style pack"]
    assert page.evaluate("() => window.__stylePack.created") == 1

    # The node's send_sync reaches the extension's listener through the editor's websocket.
    client_id = page.evaluate("() => window.app.api.clientId || window.app.api.initialClientId")
    _queue(pack_harness.url, {"1": {"class_type": "StylePackPing", "inputs": {"text": "from the node"}}}, client_id)
    page.wait_for_function("() => window.__stylePack.pings.length > 0", timeout=30_000)
    assert page.evaluate("() => window.__stylePack.pings") == [{"text": "from the node"}]
    page.wait_for_timeout(1_000)
    assert log.problems == [], "\n".join(log.problems)
    context.close()
