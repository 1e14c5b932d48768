"""Pixel fidelity: the same workflows on Plexus and on ComfyUI, image by image.

    flock /tmp/plexus-heavy.lock .venv/bin/python bench/fidelity.py --peer-dir ../peer/ComfyUI \\
        --models-dir ../peer/bench-models --port-base 8200 --markdown fidelity.md
    ... --family sd15 -k sampler/ -k inpaint/    # a subset (substring match on case names)
    ... --only plexus                            # compare against the cached ComfyUI images only
    ... --only peer                              # fill the ComfyUI image cache only
    ... --plexus-arg=--novram --plexus-arg=--vram-budget --plexus-arg=0.3   # Plexus-only server flags

The cases live in `bench/fidelity_cases/` (one module per model family: its random-weight model files and
its list of API prompts; see that package's docstring to add a family). Each family's files are written
once into `--models-dir` (`checkpoints/`, `loras/`, `embeddings/`, ...; atomically, so several benches
can share the folder), which both servers read through one `extra_model_paths.yaml`.

Both servers run with `--force-fp32` (unless `--no-fp32`) and `--cpu`, one after the other (Plexus first),
each on a fresh base directory whose `input/` holds the cases' input images. For each case the PNGs of
every SaveImage node are fetched over `GET /view` and compared with ComfyUI's: max and mean absolute
difference over all pixels and channels, in 0..255. A case agrees when max <= `--max-bar` (2) and mean <=
`--mean-bar` (0.5); a case with a `note` is a deliberate difference (reported, not counted). ComfyUI's
images are cached under `--peer-cache` by a hash of the prompt, its inputs and the peer's version, so a
rerun after a Plexus change starts only Plexus. Output: a markdown table (stdout, `--markdown`) and
`--json` (default bench/results/fidelity-<time>.json). Exit status 1 when a counted case fails the bar
or errors.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _servers import PromptFailed, Server, ServerSpec, find_peer_python, server_env, write_model_paths

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from fidelity_cases import Case, Family, ModelFile, families  # noqa: E402  (needs ROOT on the path)


# --- model files -----------------------------------------------------------------------------------

def ensure_model(models_dir: Path, model: ModelFile) -> Path:
    """Write `model` once: under a lock file, into a temporary name renamed into place."""
    path = models_dir / model.folder / model.name
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{model.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return path
        partial = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
        started = time.perf_counter()
        try:
            model.write(partial)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.0f} s",
              flush=True)
    return path


# --- running the cases on one server ---------------------------------------------------------------

@dataclass
class SideOutput:
    images: dict[str, list[bytes]] = field(default_factory=dict)   # case -> PNGs (SaveImage order)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def run_side(spec: ServerSpec, cases: list[Case], work: Path, model_paths: Path, env: dict[str, str],
             log_path: Path, port: int | None, timeout_s: float, start_timeout_s: float) -> SideOutput:
    out = SideOutput()
    server = Server(spec, work, model_paths, env, log_path, port=port)
    input_dir = server.base / "input"
    input_dir.mkdir(parents=True, exist_ok=True)
    for case in cases:
        for name, data in case.inputs.items():
            (input_dir / name).write_bytes(data)
    try:
        server.start(start_timeout_s)
        for index, case in enumerate(cases, 1):
            started = time.perf_counter()
            try:
                done = server.submit(case.prompt, timeout_s)
                out.images[case.name] = [png for node in sorted(server.images(done.history), key=int)
                                         for png in server.images(done.history)[node]]
            except (PromptFailed, OSError, KeyError, ValueError) as exc:
                out.errors[case.name] = f"{type(exc).__name__}: {exc}"[:1500]
            out.seconds[case.name] = time.perf_counter() - started
            status = "error" if case.name in out.errors else f"{len(out.images[case.name])} image(s)"
            print(f"[{spec.label}] {index}/{len(cases)} {case.name}: {status} "
                  f"({out.seconds[case.name]:.1f} s)", flush=True)
    except RuntimeError as exc:
        for case in cases:
            out.errors.setdefault(case.name, f"server: {exc}"[:1500])
    finally:
        server.stop()
    return out


# --- the ComfyUI image cache -----------------------------------------------------------------------

def case_key(case: Case, peer_version: str, server_args: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"prompt": case.prompt, "peer": peer_version, "args": server_args},
                             sort_keys=True).encode())
    for name in sorted(case.inputs):
        digest.update(name.encode() + hashlib.sha256(case.inputs[name]).digest())
    return digest.hexdigest()[:32]


def load_cached(cache: Path, key: str) -> list[bytes] | None:
    folder = cache / key
    index = folder / "images.json"
    if not index.exists():
        return None
    return [(folder / name).read_bytes() for name in json.loads(index.read_text())]


def store_cached(cache: Path, key: str, images: list[bytes]) -> None:
    folder = cache / key
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{i}.png" for i in range(len(images))]
    for name, png in zip(names, images):
        (folder / name).write_bytes(png)
    (folder / "images.json").write_text(json.dumps(names))


# --- comparing -------------------------------------------------------------------------------------

@dataclass
class CaseResult:
    name: str
    max_diff: float | None = None
    mean_diff: float | None = None
    images: int = 0
    status: str = ""                 # agrees | differs | deliberate | error
    note: str = ""
    error: str | None = None
    plexus_s: float | None = None


def decode(png: bytes):
    import numpy as np
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def compare_case(case: Case, ours: list[bytes] | None, theirs: list[bytes] | None, max_bar: float,
                 mean_bar: float) -> CaseResult:
    result = CaseResult(case.name, note=case.note)
    if ours is None or theirs is None:
        result.status = "error"
        return result
    if len(ours) != len(theirs):
        result.status, result.error = "error", f"{len(ours)} image(s) from Plexus, {len(theirs)} from ComfyUI"
        return result
    diffs = []
    for a, b in zip(ours, theirs):
        a, b = decode(a), decode(b)
        if a.shape != b.shape:
            result.status, result.error = "error", f"image shapes differ: Plexus {a.shape}, ComfyUI {b.shape}"
            return result
        diffs.append(abs(a - b).reshape(-1))
    import numpy as np
    every = np.concatenate(diffs)
    result.max_diff, result.mean_diff, result.images = float(every.max()), float(every.mean()), len(ours)
    agrees = result.max_diff <= max_bar and result.mean_diff <= mean_bar
    result.status = "agrees" if agrees else ("deliberate" if case.note else "differs")
    return result


def markdown(results: list[CaseResult], max_bar: float, mean_bar: float) -> str:
    lines = [f"| case | max | mean | images | result (bar: max <= {max_bar:g}, mean <= {mean_bar:g}) |",
             "|---|---:|---:|---:|---|"]
    for r in results:
        numbers = ("-", "-") if r.max_diff is None else (f"{r.max_diff:.0f}", f"{r.mean_diff:.3f}")
        verdict = r.status + (f": {r.note}" if r.note else "") + (f" ({r.error})" if r.error else "")
        lines.append(f"| {r.name} | {numbers[0]} | {numbers[1]} | {r.images} | {verdict.replace('|', '/')} |")
    counts = {s: sum(r.status == s for r in results) for s in ("agrees", "differs", "deliberate", "error")}
    lines.append("")
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(results)} cases")
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-dir", type=Path, required=True, help="a ComfyUI checkout")
    parser.add_argument("--peer-python", type=Path, help="the peer's python (default: a venv in or beside it)")
    parser.add_argument("--plexus-python", type=Path, default=Path(sys.executable))
    parser.add_argument("--models-dir", type=Path, default=RESULTS / "fidelity-models",
                        help="shared folder of random-weight model files (written when missing)")
    parser.add_argument("--family", action="append", help="only these families (repeatable)")
    parser.add_argument("-k", dest="filters", action="append", help="only cases whose name contains this")
    parser.add_argument("--only", choices=("plexus", "peer"),
                        help="plexus: do not start ComfyUI (compare with cached images only); "
                             "peer: only fill the ComfyUI cache")
    parser.add_argument("--peer-cache", type=Path, default=RESULTS / "fidelity-peer-cache")
    parser.add_argument("--no-peer-cache", action="store_true", help="always run ComfyUI")
    parser.add_argument("--no-fp32", action="store_true", help="run both servers in their default precision")
    parser.add_argument("--plexus-arg", dest="plexus_args", action="append", default=[],
                        help="an extra argument for the Plexus server only (repeatable), e.g. "
                             "--plexus-arg=--novram --plexus-arg=--vram-budget --plexus-arg=0.3")
    parser.add_argument("--port-base", type=int, help="Plexus on this port, ComfyUI on the next")
    parser.add_argument("--threads", type=int, help="OMP/MKL threads for both servers")
    parser.add_argument("--max-bar", type=float, default=2.0)
    parser.add_argument("--mean-bar", type=float, default=0.5)
    parser.add_argument("--prompt-timeout-s", type=float, default=900)
    parser.add_argument("--start-timeout-s", type=float, default=300)
    parser.add_argument("--list", action="store_true", help="list the selected cases and exit")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    return parser.parse_args(argv)


def select(args: argparse.Namespace) -> tuple[list[Family], list[Case]]:
    known = families()
    names = args.family or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; known: {sorted(known)}")
    chosen = [known[n] for n in names]
    cases = [c for f in chosen for c in f.cases() if not args.filters or any(k in c.name for k in args.filters)]
    return chosen, cases


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen, cases = select(args)
    if args.list:
        print("\n".join(c.name + (f"  [deliberate: {c.note}]" if c.note else "") for c in cases))
        return 0
    peer_dir = args.peer_dir.resolve()
    peer_python = (args.peer_python or find_peer_python(peer_dir)).absolute()
    version_file = peer_dir / "comfyui_version.py"
    peer_version = version_file.read_text() if version_file.exists() else str(peer_dir)
    server_args = [] if args.no_fp32 else ["--force-fp32"]
    models_dir = args.models_dir.resolve()
    for family in chosen:
        for model in family.models:
            ensure_model(models_dir, model)
    env = server_env(args.threads)
    # no timing here, and on a shared CPU spinning OpenMP threads make both servers several times slower
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    out = args.json or RESULTS / f"fidelity-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    port = (lambda i: args.port_base + i if args.port_base else None)

    with tempfile.TemporaryDirectory(prefix="plexus-fidelity-") as tmp:
        work = Path(tmp)
        folders = sorted({"checkpoints", "loras", "embeddings", "vae"} | {m.folder for f in chosen for m in f.models})
        model_paths = write_model_paths(work, models_dir, tuple(folders))
        ours = SideOutput(errors={c.name: "not run (--only peer)" for c in cases})
        if args.only != "peer":
            plexus = ServerSpec("plexus", args.plexus_python, ROOT, server_args + args.plexus_args)
            ours = run_side(plexus, cases, work, model_paths, env, out.with_name(f"{out.stem}-plexus.log"),
                            port(0), args.prompt_timeout_s, args.start_timeout_s)
        keys = {c.name: case_key(c, peer_version, server_args) for c in cases}
        theirs: dict[str, list[bytes]] = {}
        if not args.no_peer_cache:
            for c in cases:
                cached = load_cached(args.peer_cache, keys[c.name])
                if cached is not None:
                    theirs[c.name] = cached
        missing = [c for c in cases if c.name not in theirs]
        peer_errors: dict[str, str] = {}
        if missing and args.only == "plexus":
            peer_errors = {c.name: "not in the ComfyUI cache (run without --only)" for c in missing}
        elif missing:
            peer = run_side(ServerSpec("comfyui", peer_python, peer_dir, server_args), missing, work, model_paths,
                            env, out.with_name(f"{out.stem}-comfyui.log"), port(1), args.prompt_timeout_s,
                            args.start_timeout_s)
            peer_errors = peer.errors
            for name, images in peer.images.items():
                theirs[name] = images
                store_cached(args.peer_cache, keys[name], images)

    results = []
    for c in cases:
        r = compare_case(c, ours.images.get(c.name), theirs.get(c.name), args.max_bar, args.mean_bar)
        errors = [f"Plexus: {ours.errors[c.name]}"] if c.name in ours.errors else []
        errors += [f"ComfyUI: {peer_errors[c.name]}"] if c.name in peer_errors else []
        r.error = r.error or ("; ".join(errors) or None)
        r.plexus_s = ours.seconds.get(c.name)
        results.append(r)

    table = markdown(results, args.max_bar, args.mean_bar)
    command = "bench/fidelity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print("\n" + table)
    if args.markdown:
        args.markdown.write_text(f"`{command}`\n\n{table}\n", encoding="utf-8")
    out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "command": command,
        "server_args": server_args, "bars": {"max": args.max_bar, "mean": args.mean_bar},
        "results": [asdict(r) for r in results]}, indent=1), encoding="utf-8")
    print(f"\nresults: {out}")
    return 1 if any(r.status in ("differs", "error") for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
