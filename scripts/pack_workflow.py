"""Queue one API-format workflow on a running server and wait for its result (packs' end-to-end check).

    .venv/bin/python scripts/pack_workflow.py scripts/pack_workflows/sd15_five_packs.json --port 8660

Prints the history entry's status and, per node, what it output (ui outputs: images, text); exits 1 when
the prompt is refused or does not finish with success. A tool for people, like packs_survey.py.
"""
from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from pathlib import Path


def _call(url: str, body: dict | None = None, timeout_s: float = 30.0) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflow", type=Path)
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    args = parser.parse_args(argv)
    base = f"http://127.0.0.1:{args.port}"
    prompt = json.loads(args.workflow.read_text())
    try:
        queued = _call(f"{base}/prompt", {"prompt": prompt, "client_id": "pack-workflow"})
    except urllib.error.HTTPError as exc:
        print("refused:", exc.read().decode()[:2000])
        return 1
    prompt_id = queued["prompt_id"]
    deadline = time.monotonic() + args.timeout_s
    while time.monotonic() < deadline:
        history = _call(f"{base}/history/{prompt_id}")
        if prompt_id in history:
            entry = history[prompt_id]
            status = entry.get("status", {})
            print(json.dumps({"status": status.get("status_str"), "completed": status.get("completed")}))
            for node_id, output in entry.get("outputs", {}).items():
                print(node_id, prompt[node_id]["class_type"], json.dumps(output)[:300])
            if status.get("status_str") != "success":
                print(json.dumps(status.get("messages", []))[:3000])
                return 1
            return 0
        time.sleep(1.0)
    print("timed out")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
