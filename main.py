"""Plexus entry point: the only module that wires the packages together.

    python main.py [options]                      start the server (and the editor)
    python main.py run WORKFLOW.json [--set ID.input=value ...] [options]
    python main.py check WORKFLOW.json [--set ...] [options]

Options use ComfyUI's names (``--listen``, ``--port``, ``--base-directory``, ``--cpu`` ...) and
may come before or after the subcommand. ``run`` and ``check`` never import the server (aiohttp).
``run`` prints the paths of the files it wrote on stdout, progress and logs on stderr. Exit codes:
0 success, 1 invalid workflow, 2 usage or input error, 3 execution error, 130 interrupted.
"""
from __future__ import annotations

import argparse
import functools
import gc
import itertools
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from execution.caching import CachePolicy
from execution.errors import PlexusError
from execution.events import EventBus
from execution.executor import Engine, PromptRecord, RunResult
from execution.protocol import PREVIEW_METHODS
from execution.registry import NodeRegistry
from execution.replacements import replace_in_prompt
from execution.workflow import workflow_to_prompt
from nodes import services
from nodes.registry import RegistryReport, build_registry
from storage.extra_paths import DEFAULT_FILENAME, ExtraPath, apply_extra_paths
from storage.folders import Folders

PROGRAM_DIR = Path(__file__).resolve().parent
# ComfyUI's module names for custom-node packs (folder_paths, server, comfy.*): on sys.path only
# while plugins load and run; Plexus's own modules never import them (tests/test_layering.py).
COMFY_FACES_DIR = PROGRAM_DIR / "compat" / "comfy_faces"
EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
COMMANDS = ("serve", "run", "check")
ATTENTION_CHOICES = ("auto", "sdpa", "sliced", "sub-quadratic")
COMFY_ATTENTION_FLAGS = {"--use-pytorch-cross-attention": "sdpa", "--use-split-cross-attention": "sliced",
                         "--use-quad-cross-attention": "sub-quadratic"}

log = logging.getLogger("plexus")


class UsageError(Exception):
    """A problem with the command line or the input file: printed as a ComfyUI-shaped error, exit 2."""

    def __init__(self, type: str, message: str, details: str = "", extra_info: dict[str, Any] | None = None):
        super().__init__(message)
        self.body = {"type": type, "message": message, "details": details, "extra_info": extra_info or {}}


# -- arguments ------------------------------------------------------------------------------------------


def existing_directory(path: str) -> str:
    if not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path!r} is not an existing directory")
    return path


def add_options(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """ComfyUI's options (and Plexus's additions). With ``suppress`` every default is SUPPRESS, so a
    subcommand's copy only sets what was given after the subcommand."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    server = parser.add_argument_group("server")
    server.add_argument("--listen", type=str, default=default("127.0.0.1"), metavar="IP", nargs="?",
                        const="0.0.0.0,::", help="address(es) to listen on, comma separated; bare: all")
    server.add_argument("--port", type=int, default=default(8188))
    server.add_argument("--tls-keyfile", type=str, default=default(None))
    server.add_argument("--tls-certfile", type=str, default=default(None))
    server.add_argument("--enable-cors-header", type=str, default=default(None), metavar="ORIGIN", nargs="?",
                        const="*", help="send CORS headers for ORIGIN (bare: '*')")
    server.add_argument("--max-upload-size", type=float, default=default(100.0), help="in MB")
    server.add_argument("--front-end-root", type=existing_directory, default=default(None))
    server.add_argument("--api-token", type=str, default=default(None),
                        help="require this bearer token (or set PLEXUS_API_TOKEN)")
    server.add_argument("--queue-db", type=str, default=default(None),
                        help="SQLite file of the prompt queue and history (default: <user dir>/plexus/queue.sqlite3; "
                             "'memory' keeps it in memory)")

    cluster = parser.add_argument_group("cluster (needs Ray: pip install -r requirements-ray.txt)")
    cluster.add_argument("--ray", type=str, default=default(None), nargs="?", const="auto", metavar="ADDRESS",
                         help="run prompts on Ray worker actors: 'auto' (bare) starts a local Ray instance, "
                              "ADDRESS or ray://HOST:PORT joins an existing cluster")
    cluster.add_argument("--ray-workers", type=int, default=default(None), metavar="N",
                         help="number of worker actors (default: one per GPU of the cluster, or one per node "
                              "without GPUs, re-counted as machines join)")
    cluster.add_argument("--ray-worker-cpus", type=float, default=default(1.0), metavar="N",
                         help="CPUs reserved per worker actor (fractions allowed)")
    cluster.add_argument("--ray-worker-gpus", type=float, default=default(None), metavar="N",
                         help="GPUs per worker actor (default: 1 when the cluster has GPUs and --cpu is not given)")
    cluster.add_argument("--ray-worker-threads", type=int, default=default(None), metavar="N",
                         help="torch CPU threads per worker actor (default: the front end's OMP_NUM_THREADS, else "
                              "what single-machine mode uses on the worker's node; Ray's own default is dropped)")
    cluster.add_argument("--ray-join-timeout", type=float, default=default(120.0), metavar="SECONDS",
                         help="'run --ray' fails when no worker actor is up for this long while the prompt "
                              "waits (none joined, or all were lost)")

    paths = parser.add_argument_group("folders")
    paths.add_argument("--base-directory", type=str, default=default(None),
                       help="base for models/, custom_nodes/, input/, output/, temp/, user/")
    paths.add_argument("--output-directory", type=str, default=default(None))
    paths.add_argument("--input-directory", type=str, default=default(None))
    paths.add_argument("--temp-directory", type=str, default=default(None))
    paths.add_argument("--user-directory", type=str, default=default(None))
    paths.add_argument("--models-directory", type=str, default=default(None))
    paths.add_argument("--extra-model-paths-config", type=str, default=default(None), metavar="PATH",
                       nargs="+", action="append", help="load one or more extra_model_paths.yaml files")

    plugins = parser.add_argument_group("custom nodes")
    plugins.add_argument("--disable-all-custom-nodes", action="store_true", default=default(False))
    plugins.add_argument("--whitelist-custom-nodes", type=str, nargs="+", default=default([]),
                         help="custom node folders to load even with --disable-all-custom-nodes")

    cache = parser.add_argument_group("cache").add_mutually_exclusive_group()
    cache.add_argument("--cache-lru", type=int, default=default(0), metavar="N",
                       help="keep the N most recently used node outputs")
    cache.add_argument("--cache-ram", type=float, default=default(0.0), nargs="?", const=4.0, metavar="GB",
                       help="evict cached outputs when less than GB of RAM is free (bare: 4)")
    cache.add_argument("--cache-none", action="store_true", default=default(False),
                       help="keep nothing between prompts")

    device = parser.add_argument_group("device and memory")
    vram = device.add_mutually_exclusive_group()
    for flag in ("--cpu", "--highvram", "--normalvram", "--lowvram", "--novram"):
        vram.add_argument(flag, action="store_true", default=default(False))
    device.add_argument("--reserve-vram", type=float, default=default(None), metavar="GB")
    device.add_argument("--vram-budget", type=float, default=default(None), metavar="GB")
    device.add_argument("--ram-budget", type=float, default=default(None), metavar="GB")
    precision = device.add_mutually_exclusive_group()
    precision.add_argument("--force-fp32", action="store_true", default=default(False))
    precision.add_argument("--force-fp16", action="store_true", default=default(False))
    device.add_argument("--bf16-unet", action="store_true", default=default(False))
    device.add_argument("--fp32-vae", action="store_true", default=default(False))
    device.add_argument("--int8-unet", action="store_true", default=default(False),
                        help="on the CPU, store the SD1.x / SD2.x / SDXL UNet's Linear and Conv2d weights in int8 "
                             "(per output channel) and multiply in int8 with activations quantised per call: "
                             "half the weights' RAM of bf16; its speed and image distance: docs/performance.md")
    device.add_argument("--compile-unet", action="store_true", default=default(False),
                        help="run the diffusion model through torch.compile (inductor); each new image size "
                             "compiles in a background thread while the first steps run eager (minutes on a "
                             "CPU, seconds from the on-disk cache; see bench/compile.py)")
    device.add_argument("--compile-blocking", action="store_true", default=default(False),
                        help="with --compile-unet: compile on the sampling thread (the first step of each new "
                             "size waits for it) instead of in the background")
    device.add_argument("--compile-cache-dir", type=Path, default=default(None), metavar="DIR",
                        help="torch.compile's on-disk cache (default <base directory>/cache/compile; an "
                             "existing TORCHINDUCTOR_CACHE_DIR wins)")
    device.add_argument("--disable-weight-prepack", action="store_true", default=default(False),
                        help="on a CPU, run convolutions on their plain weights instead of packing them once "
                             "per sampling run (slower; for comparisons)")
    attention = device.add_mutually_exclusive_group()
    attention.add_argument("--attention", choices=ATTENTION_CHOICES, default=default("auto"),
                           help="attention kernel: auto (sliced for bf16 on a CPU, else sdpa), sdpa (PyTorch's "
                                "fused kernels), sliced (a bounded slice of queries at a time) or sub-quadratic "
                                "(chunked queries and keys); default auto")
    for flag, backend in COMFY_ATTENTION_FLAGS.items():
        attention.add_argument(flag, dest="attention", action="store_const", const=backend,
                               default=default("auto"), help=f"ComfyUI's name for --attention {backend}")

    previews = parser.add_argument_group("previews")
    previews.add_argument("--preview-method", choices=PREVIEW_METHODS, default=default("none"),
                          help="latent previews of sampler steps over the websocket (ComfyUI's option; default "
                               "none). A prompt's extra_data 'preview_method' (the editor's 'Live preview "
                               "method' setting) overrides it for that prompt")

    parser.add_argument("--verbose", default=default("INFO"), const="DEBUG", nargs="?",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description="Plexus: a node-graph engine for diffusion models, "
                                     "compatible with ComfyUI. Without a subcommand it starts the server.")
    add_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="{serve,run,check}")
    serve = commands.add_parser("serve", help="start the server (the default)")
    add_options(serve, suppress=True)
    for name, summary in (("run", "run a workflow without a server"), ("check", "validate a workflow")):
        sub = commands.add_parser(name, help=summary)
        add_options(sub, suppress=True)
        sub.add_argument("workflow", type=Path, help="API-format prompt or editor-format workflow (.json)")
        sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE_ID.input=VALUE",
                         help="override an input (VALUE read as JSON when it parses, else as text)")
        if name == "run":
            sub.add_argument("--json", dest="is_json", action="store_true",
                             help="print the result (outputs, files, timings) as JSON instead of file paths")
            sub.add_argument("--no-progress", dest="is_quiet", action="store_true", help="no progress bars")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.command = args.command or "serve"
    if bool(args.tls_keyfile) != bool(args.tls_certfile):
        build_parser().error("--tls-keyfile and --tls-certfile must be given together")
    return args


# -- wiring -----------------------------------------------------------------------------------------


def make_folders(args: argparse.Namespace) -> tuple[Folders, list[ExtraPath]]:
    """The folder layout from the directory options plus extra_model_paths.yaml files (the one next
    to main.py if present, then every --extra-model-paths-config)."""
    base = Path(args.base_directory) if args.base_directory else PROGRAM_DIR
    folders = Folders(base, output_dir=args.output_directory, input_dir=args.input_directory,
                      temp_dir=args.temp_directory, user_dir=args.user_directory,
                      models_dir=args.models_directory)
    configs = [PROGRAM_DIR / DEFAULT_FILENAME] if (PROGRAM_DIR / DEFAULT_FILENAME).is_file() else []
    configs += [Path(p) for p in itertools.chain(*(args.extra_model_paths_config or []))]
    added = []
    for config in configs:
        added += apply_extra_paths(folders, config)
    return folders, added


def compile_cache_dir(args: argparse.Namespace) -> Path:
    """Where torch.compile keeps generated code between processes: <base directory>/cache/compile."""
    return (Path(args.base_directory) if args.base_directory else PROGRAM_DIR) / "cache" / "compile"


def memory_settings(args: argparse.Namespace) -> Any:
    """model_management's MemorySettings from the device flags (imported here: model_management
    imports torch, and ``check`` should not pay for it when it is not needed elsewhere)."""
    from model_management.settings import MemorySettings, VramMode, gib_to_bytes

    mode = next((VramMode(flag) for flag in ("cpu", "highvram", "normalvram", "lowvram", "novram")
                 if getattr(args, flag)), VramMode.NORMAL)
    try:
        return MemorySettings(vram_mode=mode, device="cpu" if args.cpu else None,
                              reserve_vram_bytes=gib_to_bytes(args.reserve_vram),
                              vram_budget_bytes=gib_to_bytes(args.vram_budget),
                              ram_budget_bytes=gib_to_bytes(args.ram_budget),
                              force_fp32=args.force_fp32, force_fp16=args.force_fp16,
                              bf16_unet=args.bf16_unet, fp32_vae=args.fp32_vae, int8_unet=args.int8_unet,
                              compile_diffusion_model=args.compile_unet,
                              compile_in_background=not args.compile_blocking,
                              compile_cache_dir=str(args.compile_cache_dir or compile_cache_dir(args)),
                              attention_backend=args.attention.replace("-", "_"),
                              prepack_weights=not args.disable_weight_prepack)
    except ValueError as exc:  # MemorySettingsError: flags that contradict each other
        raise UsageError("invalid_settings", str(exc)) from exc


def cache_policy(args: argparse.Namespace) -> CachePolicy:
    if args.cache_none:
        return CachePolicy.none()
    if args.cache_lru:
        return CachePolicy.lru(args.cache_lru)
    if args.cache_ram:
        return CachePolicy.ram(min_free_bytes=int(args.cache_ram * 1024 ** 3))
    return CachePolicy.keep_last()


@dataclass
class App:
    """Everything a command needs, built once from the arguments."""

    args: argparse.Namespace
    folders: Folders
    registry: NodeRegistry
    report: RegistryReport
    events: EventBus
    engine: Engine


def ensure_demo_checkpoint(folders: Folders) -> None:
    """First start: when no checkpoint is installed anywhere, write the small random-weight demo
    checkpoint (diffusion.demo) into the first checkpoints folder so the examples run."""
    if folders.list_files("checkpoints"):
        return
    from diffusion.demo import write_demo_checkpoint

    started = time.perf_counter()
    path = write_demo_checkpoint(folders.paths("checkpoints")[0])
    folders.invalidate("checkpoints")
    log.info("No checkpoints found: wrote the random-weight demo checkpoint %s in %.1f s (it draws noise, "
             "not pictures; put real checkpoints in %s)", path, time.perf_counter() - started, path.parent)


def build_app(args: argparse.Namespace) -> App:
    folders, extra = make_folders(args)
    for entry in extra:
        log.info("Adding extra search path %s %s", entry.kind, entry.path)
    if args.command in ("serve", "run"):
        ensure_demo_checkpoint(folders)
    registry = NodeRegistry()
    events = EventBus()
    web_api = None
    if args.command == "serve":  # plugins add routes at import, so the API exists before they load
        from web.plugin_api import PluginWebAPI

        web_api = PluginWebAPI(events)
    services.install(services.NodeServices(folders=folders, settings=memory_settings(args), registry=registry,
                                           events=events, web_api=web_api, args=args))
    started = time.perf_counter()
    report = build_registry(registry, custom_node_dirs=folders.paths("custom_nodes"),
                            disable_all_custom_nodes=args.disable_all_custom_nodes,
                            whitelist_custom_nodes=args.whitelist_custom_nodes,
                            import_paths=[COMFY_FACES_DIR])
    for line in report.lines():
        print(line, file=sys.stderr)
    log.info("%d nodes registered in %.2f s", len(registry.names()), time.perf_counter() - started)
    engine = Engine(registry, events, cache_policy(args), preview_method=args.preview_method)
    services.current().interrupt = engine.interrupt     # comfy.model_management.interrupt_current_processing
    return App(args, folders, registry, report, events, engine)


# -- run / check ----------------------------------------------------------------------------------------


def read_document(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError("invalid_workflow_file", f"cannot read {path}", str(exc)) from exc
    except json.JSONDecodeError as exc:
        raise UsageError("invalid_workflow_file", f"{path} is not JSON", str(exc)) from exc


def is_api_prompt(document: Any) -> bool:
    return isinstance(document, dict) and bool(document) and all(
        isinstance(node, dict) and "class_type" in node for node in document.values())


def to_prompt(document: Any, registry: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(API prompt, extra_data) from an API-format prompt, a POST /prompt body or an editor workflow."""
    if isinstance(document, dict) and isinstance(document.get("nodes"), list):
        try:
            return workflow_to_prompt(document, registry), {"extra_pnginfo": {"workflow": document}}
        except PlexusError as exc:
            raise UsageError(exc.type, exc.message, exc.details, exc.extra_info) from exc
    if isinstance(document, dict) and is_api_prompt(document.get("prompt")):
        return replace_in_prompt(document["prompt"], registry), dict(document.get("extra_data") or {})
    if is_api_prompt(document):
        return replace_in_prompt(document, registry), {}
    raise UsageError("invalid_workflow_file", "not a workflow: expected an API-format prompt "
                     "({node id: {class_type, inputs}}) or an editor-format workflow (with 'nodes')")


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(prompt: dict[str, Any], overrides: list[str], registry: Any) -> None:
    """``NODE_ID.input=value`` assignments; an unknown node or input is an error naming the choices."""
    for override in overrides:
        target, sep, raw = override.partition("=")
        node_id, dot, input_name = target.rpartition(".")
        if not sep or not dot or not node_id or not input_name:
            raise UsageError("invalid_override", f"--set {override!r}: expected NODE_ID.input=value")
        node = prompt.get(node_id)
        if node is None:
            raise UsageError("invalid_override", f"--set {override!r}: the workflow has no node {node_id!r}",
                             "nodes: " + ", ".join(sorted(prompt, key=str)))
        inputs = node.setdefault("inputs", {})
        declared: list[str] = []
        cls = registry.get(node.get("class_type"))
        if cls is not None:
            try:
                spec = cls.INPUT_TYPES() or {}
                declared = [name for section in ("required", "optional") for name in (spec.get(section) or {})]
            except Exception:  # the validator reports broken INPUT_TYPES; accept existing inputs here
                declared = []
        if input_name not in inputs and input_name not in declared:
            known = sorted(set(inputs) | set(declared))
            raise UsageError("invalid_override",
                             f"--set {override!r}: node {node_id} ({node.get('class_type')}) has no input "
                             f"{input_name!r}", "inputs: " + ", ".join(known))
        inputs[input_name] = parse_value(raw)


def prepare(app: App) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Read, convert, override and validate the workflow of ``run`` / ``check``."""
    prompt, extra_data = to_prompt(read_document(app.args.workflow), app.registry)
    apply_overrides(prompt, app.args.overrides, app.registry)
    return prompt, extra_data, app.engine.validate(prompt)


def describe_node_errors(node_errors: dict[str, Any]) -> list[str]:
    lines = []
    for node_id, entry in node_errors.items():
        for error in entry.get("errors", []):
            details = f": {error.get('details')}" if error.get("details") else ""
            lines.append(f"  node {node_id} ({entry.get('class_type', '?')}): {error.get('message')}{details}")
    return lines


def is_valid(validation: Any) -> bool:
    """Stricter than POST /prompt: ComfyUI queues a prompt when at least one output is valid and
    drops the others; from the command line every node error fails the workflow."""
    return validation.ok and not validation.node_errors


def report_invalid(validation: Any) -> int:
    body = validation.to_response()
    if body.get("error") is None:
        body["error"] = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                         "details": "", "extra_info": {}}
    print(json.dumps(body, indent=2))
    error = body["error"]
    print(f"invalid workflow: {error.get('message', 'validation failed')}", file=sys.stderr)
    for line in describe_node_errors(validation.node_errors):
        print(line, file=sys.stderr)
    return EXIT_INVALID


def cmd_check(app: App) -> int:
    _, _, validation = prepare(app)
    if not is_valid(validation):
        return report_invalid(validation)
    print(json.dumps({"ok": True, "outputs_to_execute": validation.outputs_to_execute}))
    return EXIT_OK


class ProgressBars:
    """One tqdm bar per node that reports progress; closed when the node ends."""

    def __init__(self, registry: Any, prompt: dict[str, Any]):
        self.registry, self.prompt = registry, prompt
        self.bars: dict[str, Any] = {}

    def __call__(self, event: Any) -> None:
        if event.type == "progress":
            self.update(str(event.data.get("node")), event.data.get("value", 0), event.data.get("max", 0))
        elif event.type in ("executing", "executed", "execution_success", "execution_error",
                            "execution_interrupted"):
            self.close_all()

    def update(self, node_id: str, value: int, maximum: int) -> None:
        from tqdm import tqdm

        bar = self.bars.get(node_id)
        if bar is None:
            class_type = (self.prompt.get(node_id) or {}).get("class_type", "?")
            bar = self.bars[node_id] = tqdm(total=maximum, desc=f"#{node_id} {class_type}", file=sys.stderr,
                                            leave=True, dynamic_ncols=True)
        if maximum and bar.total != maximum:
            bar.total = maximum
            bar.refresh()
        bar.update(value - bar.n)  # tqdm redraws at most every 0.1 s

    def close_all(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def output_files(outputs: dict[str, Any], folders: Any) -> list[Path]:
    """Every file a node reported in its ui dict (``{"filename", "subfolder", "type"}`` entries)."""
    found: list[Path] = []
    for ui in outputs.values():
        for items in (ui or {}).values() if isinstance(ui, dict) else ():
            for item in items if isinstance(items, (list, tuple)) else ():
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    folder = folders.directory(item.get("type") or "output") or folders.output
                    found.append(folder / (item.get("subfolder") or "") / item["filename"])
    return found


def interrupt_on_ctrl_c(engine: Any) -> Callable[[], None]:
    """First Ctrl+C interrupts the prompt cleanly (nodes stop at their next check); a second one
    aborts. Returns the function that restores the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: Any) -> None:
        print("\ninterrupting (Ctrl+C again to abort)", file=sys.stderr)
        engine.interrupt()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, on_sigint)
    return lambda: signal.signal(signal.SIGINT, previous)


def cmd_run(app: App) -> int:
    prompt, extra_data, validation = prepare(app)
    if not is_valid(validation):
        return report_invalid(validation)
    app.folders.output.mkdir(parents=True, exist_ok=True)
    app.folders.temp.mkdir(parents=True, exist_ok=True)
    record = PromptRecord(prompt_id=str(uuid.uuid4()), prompt=prompt, extra_data=extra_data,
                          outputs_to_execute=validation.outputs_to_execute)
    bars = ProgressBars(app.registry, prompt)
    unsubscribe = app.events.subscribe(bars) if not app.args.is_quiet else (lambda: None)
    restore_sigint = interrupt_on_ctrl_c(app.engine)
    started = time.perf_counter()
    try:
        result = run_on_cluster(app, record) if app.args.ray else app.engine.execute(record)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        restore_sigint()
        bars.close_all()
        unsubscribe()
    elapsed_s = time.perf_counter() - started
    files = output_files(result.outputs, app.folders)
    if app.args.is_json:
        print(json.dumps({"status": result.status, "outputs": result.outputs, "files": [str(f) for f in files],
                          "node_timings_s": result.node_timings_s, "error": result.error}, default=str, indent=2))
    if result.status == "success":
        if not app.args.is_json:
            for path in files:
                print(path)
        print(f"Prompt executed in {elapsed_s:.2f} seconds", file=sys.stderr)
        return EXIT_OK
    if result.status == "interrupted":
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    error = result.error or {}
    if not app.args.is_json:
        print(json.dumps({"error": error}, default=str, indent=2))
    print(f"error in node {error.get('node_id')} ({error.get('node_type')}): {error.get('exception_message')}",
          file=sys.stderr)
    return EXIT_FAILED


def run_on_cluster(app: App, record: PromptRecord) -> RunResult:
    """``run --ray``: the prompt goes through the same dispatcher as the server's (a throwaway in-memory
    store, one of the cluster's workers); its outputs are written into this machine's output folder."""
    from execution.store import PromptStore

    store = PromptStore(None)
    dispatcher = start_cluster(app, store)
    restore_sigint = interrupt_on_ctrl_c(dispatcher)    # the first Ctrl+C reaches the worker running it
    try:
        store.put(record)
        workerless_since = time.monotonic()
        while not dispatcher.wait_idle(timeout_s=1.0) or store.history_item(record.prompt_id) is None:
            if dispatcher.worker_count():
                workerless_since = time.monotonic()
            elif time.monotonic() - workerless_since > app.args.ray_join_timeout:
                raise UsageError("no_workers", f"no Ray worker was up for {app.args.ray_join_timeout:g} s",
                                 "the cluster has no room for a worker actor (see --ray-worker-cpus and "
                                 "--ray-worker-gpus), or --ray-workers is 0; raise --ray-join-timeout "
                                 "for slow starts")
        item = store.history_item(record.prompt_id) or {}
    except KeyboardInterrupt:
        dispatcher.interrupt(record.prompt_id)
        raise
    finally:
        restore_sigint()
        dispatcher.stop()
        store.close()
    plexus = item.get("plexus") or {}
    return RunResult(status=plexus.get("status", "error"), outputs=item.get("outputs") or {},
                     messages=(item.get("status") or {}).get("messages") or [],
                     node_timings_s=plexus.get("node_timings_s") or {}, error=plexus.get("error"),
                     meta=item.get("meta") or {})


# -- serve ----------------------------------------------------------------------------------------------


def copied_web_extensions(folders: Folders, known: set[str]) -> list[Any]:
    """Folders packs copied into ``web/extensions/`` of the ComfyUI root they see (the per-user
    ``folders.plugin_root``), each served as ``/extensions/<folder>/`` unless a pack of that name serves
    its own."""
    from web.services import Plugin

    root = folders.plugin_web_extensions
    if not root.is_dir():
        return []
    return [Plugin(path.name, path, path) for path in sorted(root.iterdir())
            if path.is_dir() and path.name not in known]


def build_server(app: App) -> tuple[Any, Any]:
    """The server's (Services, ServerSettings) for ``app``; starts the worker thread."""
    from execution.store import PromptStore
    from execution.worker import Worker
    from web.services import Plugin, ServerSettings, Services

    args, folders = app.args, app.folders
    folders.ensure_dirs()
    queue_db = None if args.queue_db == "memory" else Path(args.queue_db or folders.user / "plexus" / "queue.sqlite3")
    store = PromptStore(queue_db)
    node_services = services.current()
    registered = dict(node_services.extension_web_dirs)   # web folders packs put in nodes.EXTENSION_WEB_DIRS
    plugins = [Plugin(p.name, p.path, p.web_directory or (Path(registered[p.name]) if p.name in registered else None))
               for p in app.report.plugins.plugins if p.is_ok]
    known = {p.name for p in plugins}
    plugins += [Plugin(name, Path(path), Path(path)) for name, path in registered.items() if name not in known]
    plugins += copied_web_extensions(folders, {p.name for p in plugins})
    if args.ray:
        from cluster.dispatcher import ClusterEngine

        dispatcher = start_cluster(app, store)
        server_services = Services(engine=ClusterEngine(app.engine, dispatcher), store=store, events=app.events,
                                   registry=app.registry, folders=folders, worker=dispatcher, plugins=plugins,
                                   system_stats=lambda: {**system_stats(), "workers": dispatcher.workers()},
                                   free_memory=dispatcher.free, plugin_api=node_services.web_api)
    else:
        worker = Worker(store, app.engine, app.events).start()
        server_services = Services(engine=app.engine, store=store, events=app.events, registry=app.registry,
                                   folders=folders, worker=worker, plugins=plugins, system_stats=system_stats,
                                   free_memory=memory_freer(app, worker), plugin_api=node_services.web_api)
    settings = ServerSettings(listen=args.listen, port=args.port,
                              max_upload_bytes=int(args.max_upload_size * 1024 * 1024),
                              cors_origin=args.enable_cors_header,
                              api_token=args.api_token or os.environ.get("PLEXUS_API_TOKEN") or None,
                              front_end_root=Path(args.front_end_root) if args.front_end_root else None,
                              tls_keyfile=args.tls_keyfile, tls_certfile=args.tls_certfile)
    return server_services, settings


def start_cluster(app: App, store: Any) -> Any:
    """``--ray``: the dispatcher over a pool of Ray worker actors, each built by :func:`build_worker_parts`
    from these arguments (same folders, devices and custom nodes; outputs come back as bytes)."""
    try:
        from cluster.ray_pool import RayPool
    except ImportError as exc:
        raise UsageError("ray_missing", "--ray needs Ray", "pip install -r requirements-ray.txt") from exc
    from cluster.dispatcher import Dispatcher
    from cluster.inputs import input_files
    from cluster.outputs import OutputWriter

    args = app.args
    address = None if args.ray == "auto" else args.ray
    target = args.ray_workers  # None: one per GPU of the cluster (one per node without GPUs), re-counted
    try:
        pool = RayPool(functools.partial(build_worker_parts, args), address=address, target=target,
                       num_cpus=args.ray_worker_cpus, num_gpus=args.ray_worker_gpus,
                       cpu_only=args.cpu, threads=args.ray_worker_threads)
    except ImportError as exc:
        raise UsageError("ray_missing", "--ray needs Ray", "pip install -r requirements-ray.txt") from exc
    dispatcher = Dispatcher(store, app.events, pool, OutputWriter(app.folders.directory),
                            input_files=functools.partial(input_files, folders=app.folders)).start()
    log.info("Ray cluster: %s, %s worker(s) wanted", args.ray, target if target is not None else "one per GPU/node")
    return dispatcher


def build_worker_parts(args: argparse.Namespace, scratch_dir: Path) -> Any:
    """Inside a worker actor: the single-machine wiring (node registry, services, model manager,
    Engine) with output and temp folders in the worker's scratch directory."""
    from cluster.runtime import RuntimeParts

    worker_args = argparse.Namespace(**vars(args))
    worker_args.command, worker_args.ray = "worker", None
    worker_args.output_directory = str(Path(scratch_dir) / "output")
    worker_args.temp_directory = str(Path(scratch_dir) / "temp")
    worker_args.input_directory = str(Path(scratch_dir) / "input")   # filled with the files each prompt names
    app = build_app(worker_args)
    app.folders.ensure_dirs()

    def resident() -> list[dict]:
        manager = services.current().existing_model_manager()
        return [] if manager is None else manager.resident()

    def free(unload_models: bool, free_memory: bool) -> None:
        manager = services.current().existing_model_manager()
        if manager is not None:
            manager.free(unload_models=True, drop_from_ram=free_memory)
        gc.collect()

    def stats() -> dict[str, Any]:
        report = services.current().model_manager().report()
        return {"device": report["device"], "memory": {"ram": report["ram"],
                                                       "models_device_bytes": report["models_device_bytes"]}}

    return RuntimeParts(app.engine, app.events, app.folders.directory, resident, free, stats)


def system_stats() -> dict[str, Any]:
    """/system_stats: RAM from psutil plus the model manager's view of the device, the dtypes it
    chose and why, and what is loaded where (creating the manager imports torch, on first call)."""
    import torch

    from web.services import default_system_stats

    stats = default_system_stats()
    report = services.current().model_manager().report()
    stats["system"]["pytorch_version"] = torch.__version__
    stats["devices"] = [report["device"]]
    stats["plexus"] = {key: report[key] for key in ("vram_mode", "vram_budget_bytes", "reserve_vram_bytes",
                                                    "models_device_bytes", "ram", "dtypes", "attention",
                                                    "convolutions_prepacked", "models")}
    return stats


def memory_freer(app: App, worker: Any) -> Callable[..., None]:
    """/free: unload models (and with free_memory, drop them from RAM and clear the output cache),
    on the worker thread between prompts so no running forward loses its weights."""

    def free_memory(*, unload_models: bool = False, free_memory: bool = False) -> None:
        def act() -> None:
            if free_memory:
                app.engine.clear_cache()
            manager = services.current().existing_model_manager()
            if manager is not None:
                manager.free(unload_models=True, drop_from_ram=free_memory)
            gc.collect()

        worker.run_between_prompts(act)

    return free_memory


def cmd_serve(app: App) -> int:
    from web.server import serve

    services, settings = build_server(app)
    try:
        serve(services, settings)
    finally:
        services.worker.stop()
    return EXIT_OK


COMMAND_FUNCTIONS: dict[str, Callable[[App], int]] = {"serve": cmd_serve, "run": cmd_run, "check": cmd_check}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.verbose), format="%(message)s", stream=sys.stderr)
    try:
        app = build_app(args)
        return COMMAND_FUNCTIONS[args.command](app)
    except UsageError as exc:
        return report_usage_error(exc.body)
    except PlexusError as exc:  # a broken extra_model_paths.yaml, an unsafe path...
        return report_usage_error(exc.to_json())


def report_usage_error(body: dict[str, Any]) -> int:
    print(json.dumps({"error": body, "node_errors": {}}, indent=2))
    print(f"error: {body['message']}" + (f" ({body['details']})" if body.get("details") else ""), file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
