"""Plexus against ComfyUI on the same txt2img API workflow, on the CPU, one server after the other.

    .venv/bin/python bench/compare.py --peer-dir ../peer/ComfyUI          # Plexus, then ComfyUI
    .venv/bin/python bench/compare.py --peer-dir ../peer/ComfyUI --smoke  # 256² only, 1 and 2 steps
    .venv/bin/python bench/compare.py --only peer --peer-dir ...          # one side only

The workflow is ComfyUI's default graph in API format: CheckpointLoaderSimple -> two CLIPTextEncode
-> EmptyLatentImage -> KSampler (euler, normal, cfg 7) -> VAEDecode -> SaveImage, on a full-size
random-weight checkpoint in the SD1.5 LDM layout written by ``models.testing`` (UNet, VAE and CLIP-L
text tower; fp16 on disk by default) into a models folder both servers read through the same
``extra_model_paths.yaml``. Each server gets its own fresh base directory (output, user, temp).

For each server it measures:
- ``startup_s``: process start to the first HTTP answer (any status) on ``/system_stats``;
- ``cold_prompt_s``: the first prompt (first size, ``--steps`` low count), checkpoint loading included;
- per size (after an unmeasured ``--warmup-steps`` run at each size but the first, which the cold
  run warmed): two warm runs that differ only in the step count; ``s_per_step`` = time difference /
  step difference (fixed costs cancel out), and ``vae_decode_s`` = the VAEDecode node's time, the
  faster of the two (from the ``executing`` websocket messages, the same way on both servers;
  Plexus's own per-node timing from ``/history`` is recorded beside it);
- ``peak_rss_mib``: the server process's peak resident set (``VmHWM`` of ``/proc/<pid>/status``).

A prompt's time runs from POST /prompt to its ``execution_success`` websocket message. The peer is a
ComfyUI checkout (``--peer-dir``) with its own virtual environment (``--peer-python``, else
``venv``/``.venv`` inside or beside the checkout), started with ``--cpu``; it is never vendored nor
needed by the tests. ``--threads N`` sets OMP/MKL threads for both servers alike; for the same torch
on both sides run Plexus with the peer's interpreter (``--plexus-python <peer venv>/bin/python``: it
has every Plexus runtime dependency). Results go to ``bench/results/compare-<time>.json``, the
server logs beside it, and the table ends with the Plexus / ComfyUI ratios (below 1: Plexus is
faster or smaller); ``--plexus-fp32`` adds a Plexus run with ``--force-fp32`` and its own ratio column.
Standard library only, apart from ``models.testing`` (torch) to write the checkpoint.
"""
from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CHECKPOINT_STEM = "plexus_bench_sd15_random"
POSITIVE = "a photograph of a lighthouse on a cliff at dusk, detailed, warm light"
NEGATIVE = "blurry, low quality"


# --- the workflow ----------------------------------------------------------------------------------

def txt2img_prompt(size: int, steps: int, seed: int, checkpoint: str) -> dict[str, Any]:
    """ComfyUI's default graph in API format; node "8" is the VAEDecode that is timed."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": POSITIVE, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
            "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "compare"}},
    }


VAE_DECODE_NODE = "8"


# --- the shared models folder ----------------------------------------------------------------------

def ensure_checkpoint(models_dir: Path, dtype_name: str) -> Path:
    """Write the full-size random SD1.5-layout checkpoint once (streamed; about 2 GB in fp16)."""
    path = models_dir / "checkpoints" / f"{CHECKPOINT_STEM}_{dtype_name}.safetensors"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    import torch

    from models.testing import CheckpointSpec, sd15_unet_config, write_random_checkpoint
    from models.vae import VAEConfig
    dtype = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    started = time.perf_counter()
    partial = path.with_suffix(".partial.safetensors")
    write_random_checkpoint(partial, CheckpointSpec(family="sd1", unet=sd15_unet_config(), vae=VAEConfig(),
                                                    dtype=dtype))
    partial.rename(path)
    print(f"wrote {path} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - started:.0f} s",
          flush=True)
    return path


def write_model_paths(work: Path, models_dir: Path) -> Path:
    """An ``extra_model_paths.yaml`` both servers read (same syntax in Plexus and ComfyUI)."""
    path = work / "extra_model_paths.yaml"
    path.write_text(f"plexus_bench:\n    base_path: {models_dir}\n    checkpoints: checkpoints/\n",
                    encoding="utf-8")
    return path


# --- a tiny websocket client (RFC 6455, receive side plus pong/close) -------------------------------

class WebSocketListener(threading.Thread):
    """Collects ``(perf_counter time, message)`` for every JSON text frame on ``/ws?clientId=``."""

    def __init__(self, host: str, port: int, client_id: str):
        super().__init__(daemon=True)
        self.host, self.port, self.client_id = host, port, client_id
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.changed = threading.Condition()
        self.error: str | None = None
        self._sock: socket.socket | None = None
        self._closing = False

    def connect(self, timeout_s: float = 30.0) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=timeout_s)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /ws?clientId={self.client_id} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                      f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"websocket handshake refused: {status.decode(errors='replace')}")
        self._buffer = head.split(b"\r\n\r\n", 1)[1]
        sock.settimeout(None)
        self._sock = sock
        self.start()

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("websocket closed")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)  # client frames are masked (RFC 6455 5.3); payloads here are < 126 bytes
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def run(self) -> None:
        fragments: list[bytes] = []
        try:
            while True:
                b0, b1 = self._read(2)
                opcode, length = b0 & 0x0F, b1 & 0x7F
                if length == 126:
                    (length,) = struct.unpack(">H", self._read(2))
                elif length == 127:
                    (length,) = struct.unpack(">Q", self._read(8))
                mask = self._read(4) if b1 & 0x80 else None
                payload = self._read(length)
                if mask:
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                if opcode == 0x8:
                    return
                if opcode == 0x9:
                    self._send(0xA, payload[:125])
                    continue
                if opcode in (0x0, 0x1, 0x2):
                    fragments.append(payload)
                    if not b0 & 0x80:
                        continue
                    data, fragments = b"".join(fragments), []
                    first_opcode = opcode
                    if first_opcode == 0x2 or (data[:1] not in (b"{", b"[")):
                        continue  # binary preview frames
                    now = time.perf_counter()
                    with self.changed:
                        self.messages.append((now, json.loads(data)))
                        self.changed.notify_all()
        except (OSError, ConnectionError, ValueError) as exc:
            if not self._closing:
                self.error = f"{type(exc).__name__}: {exc}"
        finally:
            with self.changed:
                self.changed.notify_all()

    def close(self) -> None:
        if self._sock is None or self._closing:
            return
        self._closing = True
        try:
            self._send(0x8)
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader, which then returns
        except OSError:
            pass
        self.join(timeout=5)
        self._sock.close()

    def for_prompt(self, prompt_id: str) -> list[tuple[float, dict[str, Any]]]:
        with self.changed:
            return [(t, m) for t, m in self.messages
                    if isinstance(m.get("data"), dict) and m["data"].get("prompt_id") == prompt_id]


# --- one server --------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(url: str, body: Any = None, timeout_s: float = 30.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.load(response)


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident set so far (Linux ``VmHWM``), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


@dataclass
class ServerSpec:
    label: str                # "plexus" | "comfyui"
    python: Path
    cwd: Path
    extra_args: list[str] = field(default_factory=list)


@dataclass
class PromptTiming:
    size: int
    steps: int
    seed: int
    prompt_s: float
    node_s: dict[str, float]                       # from the executing messages
    server_node_s: dict[str, float] | None = None  # Plexus's own per-node timing, when the history has it
    peak_rss_mib: float | None = None


class PromptFailed(RuntimeError):
    pass


class Server:
    """A server process started by the bench, with its websocket listener."""

    def __init__(self, spec: ServerSpec, work: Path, model_paths: Path, env: dict[str, str], checkpoint: str,
                 log_path: Path):
        self.spec, self.port, self.checkpoint = spec, free_port(), checkpoint
        self.base = work / f"base-{spec.label}"
        self.base.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [str(spec.python), "main.py", "--cpu", "--disable-all-custom-nodes",
                        "--listen", "127.0.0.1", "--port", str(self.port),
                        "--base-directory", str(self.base), "--extra-model-paths-config", str(model_paths),
                        *spec.extra_args]
        self.env = env
        self.process: subprocess.Popen | None = None
        self.ws: WebSocketListener | None = None
        self.client_id = str(uuid.uuid4())

    def start(self, timeout_s: float) -> float:
        """Start the process; return seconds from start to its first HTTP answer."""
        with open(self.log_path, "wb") as log:
            started = time.perf_counter()
            self.process = subprocess.Popen(self.command, cwd=self.spec.cwd, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.spec.label} exited with {self.process.returncode} before "
                                   f"answering; log {self.log_path}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/system_stats", timeout=2):
                    pass
                break
            except urllib.error.HTTPError:
                break  # an error status is an answer too
            except (urllib.error.URLError, OSError):
                if time.perf_counter() - started > timeout_s:
                    raise RuntimeError(f"{self.spec.label} did not answer within {timeout_s:.0f} s; "
                                       f"log {self.log_path}:\n{self.log_tail()}")
                time.sleep(0.05)
        startup_s = time.perf_counter() - started
        self.ws = WebSocketListener("127.0.0.1", self.port, self.client_id)
        self.ws.connect()
        return startup_s

    def system_stats(self) -> dict[str, Any]:
        try:
            return http_json(f"{self.url}/system_stats").get("system", {})
        except (urllib.error.URLError, OSError, ValueError):
            return {}

    def run_prompt(self, size: int, steps: int, seed: int, timeout_s: float) -> PromptTiming:
        prompt = txt2img_prompt(size, steps, seed, self.checkpoint)
        posted = time.perf_counter()
        try:
            answer = http_json(f"{self.url}/prompt", {"prompt": prompt, "client_id": self.client_id})
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")[:2000]
            raise PromptFailed(f"POST /prompt refused ({exc.code}): {body}") from exc
        prompt_id = answer["prompt_id"]
        done_at, status = self._wait(prompt_id, posted + timeout_s)
        history = self._history(prompt_id)
        if status != "execution_success":
            messages = history.get("status", {}).get("messages", [])
            errors = [m for m in messages if m and m[0] == "execution_error"]
            detail = errors[-1][1] if errors else {"status": status, "ws_error": self.ws.error}
            raise PromptFailed(json.dumps({k: detail.get(k) for k in
                                           ("node_id", "node_type", "exception_type", "exception_message",
                                            "status", "ws_error") if k in detail})[:3000])
        plexus = history.get("plexus") or {}
        return PromptTiming(size=size, steps=steps, seed=seed, prompt_s=done_at - posted,
                            node_s=node_durations(self.ws.for_prompt(prompt_id)),
                            server_node_s=plexus.get("node_timings_s"),
                            peak_rss_mib=peak_rss_mib(self.process.pid))

    def _history(self, prompt_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """The prompt's history item; ComfyUI stores it just after sending execution_success."""
        give_up = time.perf_counter() + timeout_s
        while True:
            entry = http_json(f"{self.url}/history/{prompt_id}").get(prompt_id)
            if entry or time.perf_counter() > give_up:
                return entry or {}
            time.sleep(0.05)

    def _wait(self, prompt_id: str, deadline: float) -> tuple[float, str]:
        """Until the prompt's final websocket message; the history is polled too, in case the
        socket broke (then the time is when the poll saw it)."""
        finals = ("execution_success", "execution_error", "execution_interrupted")
        last_poll = time.perf_counter()
        while True:
            for t, message in self.ws.for_prompt(prompt_id):
                if message.get("type") in finals:
                    return t, message["type"]
            now = time.perf_counter()
            if self.process.poll() is not None:
                raise PromptFailed(f"{self.spec.label} died (exit {self.process.returncode}):\n"
                                   f"{self.log_tail()}")
            if now > deadline:
                raise PromptFailed(f"prompt {prompt_id} not finished after the time limit")
            if self.ws.error or not self.ws.is_alive() or now - last_poll > 5.0:
                last_poll = now
                entry = http_json(f"{self.url}/history/{prompt_id}").get(prompt_id)
                if entry and entry.get("status", {}).get("completed") is not None:
                    ok = entry["status"].get("status_str") == "success"
                    if ok or self.ws.error or not self.ws.is_alive():
                        return time.perf_counter(), "execution_success" if ok else "execution_error"
            with self.ws.changed:
                self.ws.changed.wait(timeout=0.5)

    def stop(self) -> float | None:
        """Stop the process; return its peak RSS in MiB (read just before)."""
        peak = peak_rss_mib(self.process.pid) if self.process else None
        if self.ws:
            self.ws.close()
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return peak

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def node_durations(events: list[tuple[float, dict[str, Any]]]) -> dict[str, float]:
    """Seconds per node: from its ``executing`` message to the next ``executing`` (or the end)."""
    marks = [(t, m["data"].get("node")) for t, m in events
             if m.get("type") == "executing" or m.get("type") in ("execution_success", "execution_error")]
    durations: dict[str, float] = {}
    for (t, node), (t_next, _) in itertools.pairwise(marks):
        if node is not None:
            durations[str(node)] = durations.get(str(node), 0.0) + (t_next - t)
    return durations


# --- one side: start, cold prompt, warm pairs, stop ------------------------------------------------

@dataclass
class SideResult:
    label: str
    command: list[str]
    startup_s: float | None = None
    cold: PromptTiming | None = None
    # size -> {"lo", "hi" (PromptTiming as dicts), "s_per_step", "vae_decode_s"}
    warm: dict[int, dict[str, Any]] = field(default_factory=dict)
    peak_rss_mib: float | None = None
    system: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    log: str | None = None


def torch_version(python: Path, env: dict[str, str]) -> str | None:
    """The interpreter's torch version (asked in a subprocess, outside every timing)."""
    try:
        done = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def measure(spec: ServerSpec, args: argparse.Namespace, work: Path, model_paths: Path,
            env: dict[str, str], checkpoint: str, log_path: Path) -> SideResult:
    server = Server(spec, work, model_paths, env, checkpoint, log_path)
    result = SideResult(spec.label, server.command, log=str(log_path))
    lo, hi = args.steps
    torch_used = torch_version(spec.python, env)
    try:
        result.startup_s = server.start(args.start_timeout_s)
        print(f"[{spec.label}] first answer after {result.startup_s:.2f} s", flush=True)
        result.system = {k: server.system_stats().get(k) for k in
                         ("comfyui_version", "plexus_version", "pytorch_version", "python_version")}
        result.system["torch"] = torch_used
        result.cold = server.run_prompt(args.sizes[0], lo, seed=1, timeout_s=args.prompt_timeout_s)
        print(f"[{spec.label}] cold prompt {args.sizes[0]}² x{lo}: {result.cold.prompt_s:.2f} s", flush=True)
        for index, size in enumerate(args.sizes):
            seed = 100 + index
            if args.warmup_steps and index > 0:  # the cold run already ran at the first size
                server.run_prompt(size, args.warmup_steps, seed=seed + 50, timeout_s=args.prompt_timeout_s)
            runs = {n: server.run_prompt(size, n, seed=seed, timeout_s=args.prompt_timeout_s)
                    for n in (lo, hi)}
            s_per_step = (runs[hi].prompt_s - runs[lo].prompt_s) / (hi - lo)
            decode = [r.node_s.get(VAE_DECODE_NODE) for r in runs.values()]
            decode = [d for d in decode if d is not None]
            result.warm[size] = {"lo": asdict(runs[lo]), "hi": asdict(runs[hi]), "s_per_step": s_per_step,
                                 "vae_decode_s": min(decode) if decode else None}
            print(f"[{spec.label}] {size}²: {runs[lo].prompt_s:.2f} s x{lo}, {runs[hi].prompt_s:.2f} s x{hi} "
                  f"-> {s_per_step:.3f} s/step; VAE decode {_seconds(result.warm[size]['vae_decode_s'])}",
                  flush=True)
    except (PromptFailed, RuntimeError, OSError, KeyError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        print(f"[{spec.label}] FAILED: {result.error}\n--- log tail ---\n{server.log_tail()}", flush=True)
    finally:
        result.peak_rss_mib = server.stop()
    return result


# --- report ----------------------------------------------------------------------------------------

def rows(result: SideResult, sizes: list[int]) -> dict[str, float | None]:
    out: dict[str, float | None] = {"start to first answer (s)": result.startup_s,
                                    "first prompt, cold (s)": result.cold.prompt_s if result.cold else None}
    for size in sizes:
        warm = result.warm.get(size, {})
        out[f"{size}² warm s/step"] = warm.get("s_per_step")
        out[f"{size}² VAE decode (s)"] = warm.get("vae_decode_s")
    out["peak RSS (MiB)"] = result.peak_rss_mib
    return out


def print_table(results: list[SideResult], sizes: list[int]) -> None:
    """One column per server, then one ratio column per Plexus variant against ComfyUI."""
    table = {r.label: rows(r, sizes) for r in results}
    labels = [r.label for r in results]
    ratios = [label for label in labels if label.startswith("plexus")] if "comfyui" in labels else []
    width = max(12, *(len(label) + 2 for label in labels))
    header = f"{'':28}" + "".join(f"{label:>{width}}" for label in labels)
    header += "".join(f"{label + '/C':>{width + 2}}" for label in ratios)
    print("\n" + header)
    for name in next(iter(table.values())):
        line = f"{name:28}"
        for label in labels:
            value = table[label][name]
            line += f"{value:{width}.3f}" if value is not None else f"{'-':>{width}}"
        for label in ratios:
            p, c = table[label][name], table["comfyui"][name]
            line += f"{p / c:{width + 2}.2f}" if p is not None and c else f"{'-':>{width + 2}}"
        print(line)
    print("torch: " + ", ".join(f"{r.label} {r.system.get('torch')}" for r in results))
    for r in results:
        if r.error:
            print(f"\n{r.label} failed: {r.error}")


# --- main ------------------------------------------------------------------------------------------

def find_peer_python(peer_dir: Path) -> Path:
    for candidate in (peer_dir / ".venv", peer_dir / "venv", peer_dir.parent / "venv",
                      peer_dir.parent / ".venv"):
        python = candidate / "bin" / "python"
        if python.exists():
            return python
    raise SystemExit(f"no virtual environment found for {peer_dir}; pass --peer-python")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-dir", type=Path, help="a ComfyUI checkout (with its own virtual environment)")
    parser.add_argument("--peer-python", type=Path,
                        help="the peer's python (default: a venv found in or beside --peer-dir)")
    parser.add_argument("--plexus-python", type=Path, default=Path(sys.executable))
    parser.add_argument("--only", choices=("plexus", "peer"), help="measure one side only")
    parser.add_argument("--plexus-fp32", action="store_true",
                        help="also run Plexus with --force-fp32 (column plexus-fp32), against the same peer run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, nargs=2, default=[4, 10], metavar=("LOW", "HIGH"),
                        help="step counts of the two warm runs (the cold run uses LOW)")
    parser.add_argument("--warmup-steps", type=int, default=1,
                        help="an unmeasured run at each new size before the pair (0: none)")
    parser.add_argument("--smoke", action="store_true", help="256² only, steps 1 and 2, no warm-up run")
    parser.add_argument("--ckpt-dtype", choices=("fp16", "fp32", "bf16"), default="fp16")
    parser.add_argument("--models-dir", type=Path,
                        help="reuse this models folder (the checkpoint is written there once); "
                             "default: a temp one")
    parser.add_argument("--threads", type=int, help="OMP/MKL threads for both servers")
    parser.add_argument("--start-timeout-s", type=float, default=300)
    parser.add_argument("--prompt-timeout-s", type=float, default=3600)
    parser.add_argument("--json", type=Path, help="where to write the results (default bench/results/)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.steps, args.warmup_steps = [256], [1, 2], 0
    if args.steps[1] <= args.steps[0]:
        parser.error("--steps LOW HIGH needs HIGH > LOW")
    if args.only != "plexus" and args.peer_dir is None:
        if args.only == "peer":
            parser.error("--only peer needs --peer-dir")
        print("no --peer-dir: measuring Plexus only", flush=True)
        args.only = "plexus"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    specs: list[ServerSpec] = []
    if args.only != "peer":
        specs.append(ServerSpec("plexus", args.plexus_python, ROOT))
        if args.plexus_fp32:
            specs.append(ServerSpec("plexus-fp32", args.plexus_python, ROOT, ["--force-fp32"]))
    if args.only != "plexus":
        peer_dir = args.peer_dir.resolve()
        if not (peer_dir / "main.py").exists():
            raise SystemExit(f"{peer_dir} is not a ComfyUI checkout (no main.py)")
        peer_python = (args.peer_python or find_peer_python(peer_dir)).absolute()
        specs.append(ServerSpec("comfyui", peer_python, peer_dir))

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))

    out = args.json or RESULTS / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="plexus-compare-") as tmp:
        work = Path(tmp)
        models_dir = (args.models_dir or work / "models").resolve()
        checkpoint = ensure_checkpoint(models_dir, args.ckpt_dtype)
        model_paths = write_model_paths(work, models_dir)
        results = [measure(spec, args, work, model_paths, env, checkpoint.name,
                           out.with_name(f"{out.stem}-{spec.label}.log")) for spec in specs]

    print_table(results, args.sizes)
    out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "cpu_count": os.cpu_count(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "checkpoint": checkpoint.name, "results": [asdict(r) for r in results],
    }, indent=1), encoding="utf-8")
    print(f"\nresults: {out}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
