"""Drop each custom-node pack alone into ``custom_nodes/`` of a fresh Plexus and record what happens.

    .venv/bin/python scripts/packs_survey.py /tmp/faces-packs --port 8550 --markdown docs/packs.md

For every folder under the packs directory (a pack as fetched, e.g. ``git archive`` of its repository)
this makes a scratch base directory (``--scratch``, never the repository), copies the pack into its
``custom_nodes/``, starts ``main.py serve --cpu --base-directory <scratch> --port <port>``, waits for
``/object_info``, and records: whether the pack imported, how many node classes it registered (nodes whose
``python_module`` is ``custom_nodes.<pack>``), how many of its JS files ``/extensions`` lists and whether
the first one is served, and the first error line of the start-up log (the load error's last line).

It is a tool for people, not a test: the packs are third-party code and are not part of the repository.
Packs' own requirements are not installed by this script; a missing one shows as the pack's error.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _get(url: str, timeout_s: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read()


def _first_error(log: str) -> str:
    """The reason of the pack's load failure (Plexus's "Cannot import ... for custom nodes: <reason>")."""
    match = re.search(r"Cannot import .*? module for custom nodes: (.*)", log)
    return match.group(1).strip()[:200] if match else ""


def survey_pack(pack_dir: Path, scratch: Path, port: int, python: str, timeout_s: float,
                server_main: Path | None = None) -> dict:
    """``server_main``: another server's ``main.py`` taking the same flags (ComfyUI's, to count the same pack there)."""
    name = pack_dir.name
    base = scratch / name
    shutil.rmtree(base, ignore_errors=True)
    (base / "custom_nodes").mkdir(parents=True)
    shutil.copytree(pack_dir, base / "custom_nodes" / name, symlinks=True)
    log_path = base / "plexus.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        server = subprocess.Popen([python, str(server_main or REPO / "main.py"), "--cpu", "--port", str(port),
                                   "--base-directory", str(base)], stdout=log, stderr=subprocess.STDOUT,
                                  cwd=str((server_main.parent if server_main else base)), env=env)
    row = {"pack": name, "imports_ok": False, "nodes": 0, "classes": [], "js_listed": 0, "js_served": False,
           "error": ""}
    try:
        deadline = time.monotonic() + timeout_s
        info = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                info = json.loads(_get(f"http://127.0.0.1:{port}/object_info", 30))
                break
            except OSError:
                time.sleep(1.0)
        log_text = log_path.read_text(errors="replace")
        if info is None:
            row["error"] = _first_error(log_text) or f"server did not answer (exit {server.poll()})"
            return row
        module = f"custom_nodes.{name}"
        row["classes"] = sorted(key for key, spec in info.items()
                                if str(spec.get("python_module", "")).startswith(module))
        row["nodes"] = len(row["classes"])
        extensions = json.loads(_get(f"http://127.0.0.1:{port}/extensions"))
        mine = [e for e in extensions if e.startswith(f"/extensions/{name}/")]
        row["js_listed"] = len(mine)
        if mine:
            try:
                row["js_served"] = len(_get(f"http://127.0.0.1:{port}{mine[0]}")) > 0
            except OSError:
                row["js_served"] = False
        row["error"] = _first_error(log_text)
        row["imports_ok"] = "IMPORT FAILED" not in log_text and not row["error"]
        return row
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()


def markdown(rows: list[dict], command: str) -> str:
    out = ["| pack | imports ok | node classes | JS listed / first served | first error |",
           "|---|---|---|---|---|"]
    for row in rows:
        js = f"{row['js_listed']} / {'yes' if row['js_served'] else 'no'}" if row["js_listed"] else "0 / -"
        error = row["error"].replace("|", "\\|") or "-"
        out.append(f"| {row['pack']} | {'yes' if row['imports_ok'] else 'no'} | {row['nodes']} | {js} | {error} |")
    ok = sum(r["imports_ok"] for r in rows)
    out.append("")
    out.append(f"{ok} of {len(rows)} packs import; {sum(r['nodes'] for r in rows)} node classes registered. "
               f"Command: `{command}`")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packs", type=Path, help="a folder holding one folder per pack")
    parser.add_argument("--only", nargs="*", default=None, help="pack folder names to try (default all)")
    parser.add_argument("--port", type=int, default=8550)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/plexus-packs-survey"))
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--timeout-s", type=float, default=180.0)
    parser.add_argument("--server-main", type=Path, default=None,
                        help="run this main.py instead of Plexus's (e.g. ComfyUI's, to count the same packs there)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    packs = sorted(p for p in args.packs.iterdir() if p.is_dir() and (args.only is None or p.name in args.only))
    rows = []
    for pack in packs:
        row = survey_pack(pack, args.scratch, args.port, args.python, args.timeout_s, args.server_main)
        print(json.dumps({k: v for k, v in row.items() if k != "classes"}), flush=True)
        rows.append(row)
    command = "python scripts/packs_survey.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    text = markdown(rows, command)
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
