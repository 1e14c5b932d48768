"""The official editor (comfyui-frontend-package 1.58.1) in headless Chromium against our server.

Opt-in (``PLEXUS_BROWSER_TESTS=1``): it needs Debian's ``chromium`` (``apt-get install chromium``) and
Playwright for Python (``pip install playwright``; no browser download: it drives /usr/bin/chromium).
Without the variable these tests are deselected, not skipped.

"Boots clean" is shared/frontend-api.md §9: during boot + 10 s idle on a fresh profile, no
console error, no uncaught page error, no HTTP status >= 400 and no failed request.
Screenshots go to ``$PLEXUS_BROWSER_SHOTS`` (default: the test's tmp folder).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("PLEXUS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
IDLE_MS = 10_000
TEST_WORKFLOW = {
    "last_node_id": 2,
    "last_link_id": 1,
    "version": 0.4,
    "groups": [],
    "config": {},
    "extra": {},
    "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    "nodes": [
        {
            "id": 1,
            "type": "MakeImage",
            "pos": [100, 100],
            "size": [300, 150],
            "flags": {},
            "order": 0,
            "mode": 0,
            "inputs": [],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1], "slot_index": 0}],
            "properties": {},
            "widgets_values": [7, "fixed", 12, 256, 256],
        },
        {
            "id": 2,
            "type": "SaveImage",
            "pos": [500, 100],
            "size": [400, 400],
            "flags": {},
            "order": 1,
            "mode": 0,
            "inputs": [{"name": "images", "type": "IMAGE", "link": 1}],
            "outputs": [],
            "properties": {},
            "widgets_values": ["browser"],
        },
    ],
}


class PageLog:
    """Everything the checklist counts as a failure, recorded from the page's events."""

    def __init__(self, page) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.frames: list[dict] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("requestfailed", lambda r: self.problems.append(f"failed request: {r.url} {r.failure}"))
        page.on(
            "response",
            lambda r: self.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
        )
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _console(self, message) -> None:
        if message.type == "error":
            self.problems.append(f"console error: {message.text}")
        elif message.type == "warning":
            self.warnings.append(message.text)

    def _frame(self, payload) -> None:
        if isinstance(payload, str):
            self.frames.append(json.loads(payload))

    def kinds(self) -> list[str]:
        return [f["type"] for f in self.frames]


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("PLEXUS_BROWSER_SHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_editor_boots_clean_shows_the_demo_template_and_runs_a_workflow(harness, browser, shots) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})  # a fresh profile
    page = context.new_page()
    log = PageLog(page)
    page.goto(harness.url + "/")
    page.wait_for_function("() => window.app && window.app.graph", timeout=60_000)
    # First run: the template browser opens, with the Plexus demo first.
    page.wait_for_selector("text=Plexus demo: SD1.5 txt2img", timeout=30_000)
    page.wait_for_timeout(IDLE_MS)
    page.screenshot(path=str(shots / "01-boot-templates.png"))
    assert log.problems == [], "the editor did not boot clean:\n" + "\n".join(log.problems)

    # Every node of the registry is in the editor's node library with its widgets.
    defs = page.evaluate("() => Object.keys(window.LiteGraph.registered_node_types)")
    assert {"MakeImage", "SaveImage", "Gate", "Fail"} <= set(defs)

    page.keyboard.press("Escape")
    page.evaluate("(wf) => window.app.loadGraphData(wf)", TEST_WORKFLOW)
    widgets = page.evaluate("() => window.app.graph.getNodeById(1).widgets.map(w => w.name)")
    assert widgets[0] == "seed" and "steps" in widgets and "height" in widgets
    page.click("button:has-text('Run')")
    page.wait_for_function(
        "() => document.querySelectorAll('img[src*=\"/api/view\"]').length > 0"
        " || (window.app.nodeOutputs && Object.keys(window.app.nodeOutputs).length > 0)",
        timeout=30_000,
    )
    page.wait_for_timeout(1_000)
    page.screenshot(path=str(shots / "02-run-result.png"))
    kinds = log.kinds()
    assert "execution_start" in kinds and "progress" in kinds and "executed" in kinds
    assert kinds.index("execution_success") < len(kinds) - 1
    executed = next(f["data"] for f in log.frames if f["type"] == "executed")
    assert executed["output"]["images"][0]["filename"].startswith("browser_")
    outputs = page.evaluate("() => JSON.stringify(window.app.nodeOutputs || {})")
    assert "browser_" in outputs
    assert log.problems == [], "\n".join(log.problems)

    # Save it the way a user does: Ctrl+S, type a name, Enter.
    page.mouse.click(700, 760)   # focus the canvas (an empty spot)
    page.keyboard.press("Control+s")
    page.locator("input[type=text]:visible").last.fill("browser_test")
    with page.expect_response(lambda r: "/api/userdata/workflows%2Fbrowser_test.json" in r.url) as saved:
        page.keyboard.press("Enter")
    assert saved.value.status == 200
    stored = json.loads((harness.base / "user" / "default" / "workflows" / "browser_test.json").read_text())
    assert sorted(n["type"] for n in stored["nodes"]) == ["MakeImage", "SaveImage"]
    assert log.problems == [], "\n".join(log.problems)
    context.close()


def test_a_returning_user_without_open_workflows_gets_the_sd15_demo_as_default_graph(
    harness, browser, shots
) -> None:
    settings = harness.base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(harness.url + "/")
    page.wait_for_function(
        "() => window.app && window.app.graph && window.app.graph.nodes.length > 0", timeout=60_000
    )
    page.screenshot(path=str(shots / "03-returning-user-default-graph.png"))
    types = page.evaluate("() => window.app.graph.nodes.map(n => n.type).sort()")
    demo = json.loads(
        (
            Path(__file__).resolve().parents[2] / "web" / "templates" / "plexus_demo_sd15_txt2img.json"
        ).read_text()
    )
    assert types == sorted(n["type"] for n in demo["nodes"])
    context.close()


def test_first_click_on_the_sd15_demo_template_generates(real_harness, browser, shots) -> None:
    """The whole stack: a new user picks the demo template, presses Run and sees the image."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    log = PageLog(page)
    page.goto(real_harness.url + "/")
    page.wait_for_function("() => window.app && window.app.graph", timeout=60_000)
    defs = page.evaluate("() => Object.keys(window.LiteGraph.registered_node_types)")
    assert set(real_harness.registry.names()) <= set(defs), "nodes missing from the editor"
    page.click("text=Plexus demo: SD1.5 txt2img", timeout=30_000)
    page.wait_for_function("() => window.app.graph.nodes.some(n => n.type === 'KSampler')", timeout=30_000)
    page.wait_for_timeout(1_000)
    page.screenshot(path=str(shots / "04-demo-loaded.png"))
    assert log.problems == [], "\n".join(log.problems)
    page.click("button:has-text('Run')")
    page.wait_for_function(
        "() => window.app.nodeOutputs && Object.values(window.app.nodeOutputs)"
        ".some(o => o.images && o.images.length)",
        timeout=300_000,
    )
    page.wait_for_timeout(1_500)
    page.screenshot(path=str(shots / "05-demo-result.png"))
    kinds = log.kinds()
    assert "progress" in kinds and "execution_success" in kinds and "execution_error" not in kinds
    assert any(k == "progress" and f["data"]["node"] == "3" for k, f in zip(kinds, log.frames))
    assert log.problems == [], "\n".join(log.problems)
    context.close()
