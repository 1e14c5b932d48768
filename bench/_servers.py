"""Running a Plexus or ComfyUI server from a bench script: start it on a fresh base directory, post API
prompts, follow them over the websocket, read their history and fetch their images, stop it.

Shared by `bench/compare.py` (timings) and `bench/fidelity.py` (pixels). Standard library only.

    server = Server(ServerSpec("plexus", python, ROOT), work, model_paths, env, log_path, port=8200)
    server.start(timeout_s=300)
    done = server.submit(prompt, timeout_s=600)          # -> Submitted (raises PromptFailed)
    images = server.images(done.history)                 # PNG bytes per output node
    server.stop()
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def write_model_paths(work: Path, models_dir: Path,
                      folders: tuple[str, ...] = ("checkpoints", "loras", "embeddings", "vae")) -> Path:
    """An ``extra_model_paths.yaml`` both servers read (same syntax in Plexus and ComfyUI)."""
    path = work / "extra_model_paths.yaml"
    lines = [f"plexus_bench:", f"    base_path: {models_dir}"] + [f"    {name}: {name}/" for name in folders]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def find_peer_python(peer_dir: Path) -> Path:
    for candidate in (peer_dir / ".venv", peer_dir / "venv", peer_dir.parent / "venv",
                      peer_dir.parent / ".venv"):
        python = candidate / "bin" / "python"
        if python.exists():
            return python
    raise SystemExit(f"no virtual environment found for {peer_dir}; pass --peer-python")


def server_env(threads: int | None = None) -> dict[str, str]:
    """The environment both servers get: this one without PYTHONPATH / VIRTUAL_ENV, threads pinned."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


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
    label: str                # "plexus" | "comfyui" | ...
    python: Path
    cwd: Path
    extra_args: list[str] = field(default_factory=list)


class PromptFailed(RuntimeError):
    pass


@dataclass
class Submitted:
    prompt_id: str
    posted: float                                   # perf_counter at POST /prompt
    done_at: float                                  # perf_counter of the final websocket message
    history: dict[str, Any]                         # the prompt's /history item
    events: list[tuple[float, dict[str, Any]]]      # its websocket messages


class Server:
    """A server process started by a bench script, with its websocket listener."""

    def __init__(self, spec: ServerSpec, work: Path, model_paths: Path, env: dict[str, str], log_path: Path,
                 port: int | None = None):
        self.spec, self.port = spec, port or free_port()
        self.base = work / f"base-{spec.label}"
        self.base.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{self.port}"
        # a VRAM mode in the extra arguments replaces --cpu (they exclude each other; without a GPU the
        # device is the CPU anyway, with --vram-budget simulating a small one)
        vram_modes = {"--cpu", "--highvram", "--normalvram", "--lowvram", "--novram"}
        device = [] if vram_modes & set(spec.extra_args) else ["--cpu"]
        self.command = [str(spec.python), "main.py", *device, "--disable-all-custom-nodes",
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

    def submit(self, prompt: dict[str, Any], timeout_s: float) -> Submitted:
        """Post an API prompt and wait for it; PromptFailed (with the server's error) unless it succeeds."""
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
        return Submitted(prompt_id, posted, done_at, history, self.ws.for_prompt(prompt_id))

    def images(self, history: dict[str, Any]) -> dict[str, list[bytes]]:
        """The files of each output node's ``images`` list, fetched through ``GET /view``."""
        found: dict[str, list[bytes]] = {}
        for node_id, output in sorted((history.get("outputs") or {}).items()):
            for image in output.get("images") or []:
                query = urllib.parse.urlencode({"filename": image["filename"], "subfolder": image.get("subfolder", ""),
                                                "type": image.get("type", "output")})
                with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=60) as response:
                    found.setdefault(node_id, []).append(response.read())
        return found

    def _history(self, prompt_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
        """The prompt's history item; ComfyUI stores it just after sending execution_success."""
        give_up = time.perf_counter() + timeout_s
        while True:
            try:
                entry = http_json(f"{self.url}/history/{prompt_id}", timeout_s=timeout_s).get(prompt_id)
            except OSError:  # busy server: ask again until give_up
                entry = None
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
                try:
                    entry = http_json(f"{self.url}/history/{prompt_id}").get(prompt_id)
                except OSError:  # TimeoutError included: a server busy in its prompt thread answers late
                    entry = None
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
