"""A local Ray cluster (one Ray instance for the module, CPU worker actors with a quarter CPU each)
running the server tests' pure-Python nodes: prompts from several clients spread over the workers,
a worker killed mid-prompt, a front-end restart with queued prompts, interrupts, /free, workers
joining and draining, and outputs identical to single-machine mode."""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")  # the optional engine: CI installs requirements-ray.txt

from cluster.dispatcher import ClusterEngine, Dispatcher  # noqa: E402
from cluster.outputs import OutputWriter  # noqa: E402
from cluster.ray_pool import RayPool  # noqa: E402
from execution.events import EventBus  # noqa: E402
from execution.executor import Engine, PromptRecord  # noqa: E402
from execution.store import PromptStore  # noqa: E402
from execution.worker import Worker  # noqa: E402
from storage.folders import Folders  # noqa: E402

from . import cluster_nodes  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace=f"plexus-test-{uuid.uuid4().hex[:6]}",
             object_store_memory=128 * 1024 * 1024, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield
    ray.shutdown()


class FrontEnd:
    """The front end as main.py wires it with --ray: store, events, dispatcher over a RayPool."""

    def __init__(self, base: Path, workers: int, db: Path | None = None):
        self.folders = Folders(base)
        self.folders.ensure_dirs()
        self.events = EventBus()
        self.seen: list[Any] = []
        self.events.subscribe(self.seen.append)
        self.store = PromptStore(db)
        self.pool = RayPool(cluster_nodes.build_parts, target=workers, num_cpus=0.25)
        self.dispatcher = Dispatcher(self.store, self.events, self.pool, OutputWriter(self.folders.directory),
                                     heartbeat_interval_s=0.5, poll_interval_s=0.2).start()
        self.local = Engine(cluster_nodes.make_registry(self.folders), self.events)
        self.engine = ClusterEngine(self.local, self.dispatcher)
        assert self.dispatcher.wait_for_workers(workers, 120), "worker actors did not start"

    def queue(self, api: dict, client_id: str | None = None, extra_data: dict | None = None) -> str:
        validation = self.engine.validate(api)
        assert validation.ok, validation.to_response()
        record = PromptRecord(prompt_id=str(uuid.uuid4()), prompt=api, client_id=client_id,
                              extra_data=extra_data or {}, outputs_to_execute=validation.outputs_to_execute)
        return self.store.put(record).prompt_id

    def events_of(self, prompt_id: str) -> list[Any]:
        return [e for e in self.seen if isinstance(e.data, dict) and e.data.get("prompt_id") == prompt_id]

    def wait_running(self, prompt_id: str, timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            worker_id = self.dispatcher.scheduler.running_on(prompt_id)
            if worker_id and any(e.type == "progress" for e in self.events_of(prompt_id)):
                return worker_id
            time.sleep(0.05)
        raise AssertionError(f"{prompt_id} never started")

    def close(self) -> None:
        self.dispatcher.stop()
        self.store.close()


def single_machine_outputs(base: Path, prompts: list[dict]) -> dict[str, bytes]:
    folders = Folders(base)
    folders.ensure_dirs()
    events = EventBus()
    store = PromptStore(None)
    engine = Engine(cluster_nodes.make_registry(folders), events)
    worker = Worker(store, engine, events).start()
    for api in prompts:
        store.put(PromptRecord(prompt_id=str(uuid.uuid4()), prompt=api, outputs_to_execute=["9"]))
    assert worker.wait_idle(60)
    worker.stop()
    return {p.name: p.read_bytes() for p in sorted(folders.output.iterdir())}


def local_kinds(base: Path, api: dict) -> list[str]:
    """The event types a single-machine engine emits for ``api`` (the order clients must see)."""
    folders = Folders(base)
    folders.ensure_dirs()
    seen: list[Any] = []
    events = EventBus()
    events.subscribe(seen.append)
    Engine(cluster_nodes.make_registry(folders), events).execute(
        PromptRecord(prompt_id="local", prompt=api, outputs_to_execute=["9"]))
    return [e.type for e in seen if isinstance(e.data, dict) and e.data.get("prompt_id") == "local"]


def test_prompts_from_several_clients_spread_over_workers_with_their_messages(ray_instance, tmp_path) -> None:
    front = FrontEnd(tmp_path / "front", workers=3)
    try:
        prompts = [cluster_nodes.prompt(seed, ckpt=f"m{seed % 2}.safetensors", sleep_s=0.3) for seed in range(6)]
        ids = [front.queue(api, client_id=f"client-{i % 3}") for i, api in enumerate(prompts)]
        assert front.dispatcher.wait_idle(120)
        workers_used = set()
        for index, prompt_id in enumerate(ids):
            item = front.store.history_item(prompt_id)
            assert item["status"]["status_str"] == "success", item["plexus"]["error"]
            assert item["plexus"]["attempts"] == 1 and item["plexus"]["worker"].startswith("plexus-worker-")
            workers_used.add(item["plexus"]["worker"])
            events = front.events_of(prompt_id)
            assert {e.client_id for e in events} == {f"client-{index % 3}"}
            kinds = [e.type for e in events]
            assert kinds == local_kinds(tmp_path / f"local-{index}", prompts[index]), kinds
            values = [e.data["value"] for e in events if e.type == "progress" and e.data["node"] == "1"]
            assert values == [1, 2, 3]
            executed = next(e.data for e in events if e.type == "executed")
            image = executed["output"]["images"][0]
            assert image == item["outputs"]["9"]["images"][0]
            assert (front.folders.output / image["filename"]).is_file()
        assert len(workers_used) >= 2
        names = sorted(p.name for p in front.folders.output.iterdir())
        assert names == [f"cl_{n:05}_.png" for n in range(1, 7)]     # renumbered, nothing clobbered
        assert not list(front.folders.output.glob(".*partial"))
        stats = front.dispatcher.workers()
        assert len(stats) == 3 and all(w["device"]["name"] == "cpu" for w in stats)
        assert all(set(w["resident"]) == {"files", "loras"} for w in stats)
        # same-model prompts: every worker that ran anything holds one of the two models
        assert {f for w in stats for f in w["resident"]["files"]} <= {"m0.safetensors", "m1.safetensors"}
    finally:
        front.close()


def test_identical_outputs_to_single_machine_mode(ray_instance, tmp_path) -> None:
    prompts = [cluster_nodes.prompt(seed) for seed in (3, 4, 5)]
    expected = single_machine_outputs(tmp_path / "single", prompts)
    front = FrontEnd(tmp_path / "front", workers=2)
    try:
        for api in prompts:
            front.queue(api)
            assert front.dispatcher.wait_idle(60)      # one at a time: the same numbering order
        got = {p.name: p.read_bytes() for p in sorted(front.folders.output.iterdir())}
        assert got == expected
    finally:
        front.close()


def test_killed_worker_loses_nothing_and_the_prompt_completes_elsewhere(ray_instance, tmp_path) -> None:
    front = FrontEnd(tmp_path / "front", workers=2)
    try:
        prompt_id = front.queue(cluster_nodes.prompt(1, sleep_s=3.0), client_id="c")
        victim = front.wait_running(prompt_id)
        ray.kill(front.pool.actors[victim])
        assert front.dispatcher.wait_idle(120)
        item = front.store.history_item(prompt_id)
        assert item["status"]["status_str"] == "success", item["plexus"]["error"]
        assert item["plexus"]["attempts"] == 2 and item["plexus"]["worker"] != victim
        assert sorted(p.name for p in front.folders.output.iterdir()) == ["cl_00001_.png"]
        assert front.dispatcher.wait_for_workers(2, 60)          # the pool replaced the dead worker
        assert victim not in front.dispatcher.scheduler.workers
    finally:
        front.close()


def test_front_end_restart_with_queued_prompts_loses_nothing(ray_instance, tmp_path) -> None:
    db = tmp_path / "queue.sqlite3"
    front = FrontEnd(tmp_path / "front", workers=1, db=db)
    ids = [front.queue(cluster_nodes.prompt(seed, sleep_s=2.0)) for seed in range(3)]
    front.wait_running(ids[0])
    front.close()                                  # the front end goes down with a prompt running
    store = PromptStore(db)
    assert store.queue_remaining() == 3 and store.history_count() == 0
    store.close()
    again = FrontEnd(tmp_path / "front", workers=2, db=db)
    try:
        assert again.dispatcher.wait_idle(120)
        statuses = [again.store.history_item(pid)["status"]["status_str"] for pid in ids]
        assert statuses == ["success"] * 3
    finally:
        again.close()


def test_interrupt_free_pins_joining_and_draining(ray_instance, tmp_path) -> None:
    front = FrontEnd(tmp_path / "front", workers=1)
    try:
        prompt_id = front.queue(cluster_nodes.prompt(1, sleep_s=20.0), client_id="c")
        front.wait_running(prompt_id)
        front.engine.interrupt(prompt_id)
        assert front.dispatcher.wait_idle(60)
        assert front.store.status_of(prompt_id) == "interrupted"
        assert "execution_interrupted" in [e.type for e in front.events_of(prompt_id)]
        front.pool.target += 1                     # a worker joins later and takes prompts
        assert front.dispatcher.wait_for_workers(2, 60)
        newcomer = max(front.dispatcher.scheduler.workers)
        pinned = front.queue(cluster_nodes.prompt(2), extra_data={"plexus": {"worker": newcomer}})
        assert front.dispatcher.wait_idle(60)
        assert front.store.history_item(pinned)["plexus"]["worker"] == newcomer
        front.engine.clear_cache()                 # /free reaches every worker
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(w["memory"] is not None and
                                                       front.pool.stats(w["id"]).get("frees")
                                                       for w in front.dispatcher.workers()):
            time.sleep(0.1)
        assert all(front.pool.stats(w)["frees"] == [(False, True)] for w in front.dispatcher.scheduler.workers)
        front.dispatcher.drain(newcomer)           # drained: it leaves, the other runs what follows
        later = front.queue(cluster_nodes.prompt(3))
        assert front.dispatcher.wait_idle(60)
        assert front.store.history_item(later)["plexus"]["worker"] != newcomer
        deadline = time.monotonic() + 10
        while newcomer in front.dispatcher.scheduler.workers and time.monotonic() < deadline:
            time.sleep(0.1)
        assert newcomer not in front.dispatcher.scheduler.workers and newcomer not in front.pool.actors
    finally:
        front.close()


def test_main_with_ray_serves_the_api_and_matches_single_machine_output(ray_instance, tmp_path) -> None:
    """``main.py --ray`` wiring (built-in nodes, a tiny SD1.5 checkpoint) over HTTP and the websocket:
    the same PNG as the single-machine server, the worker and its resident checkpoint in the reports."""
    import asyncio
    import io

    import aiohttp
    from PIL import Image

    import main
    from tests.web.client import Listener, get, post
    from tests.web.conftest import RealHarness
    from tests.web.test_real_txt2img import demo_prompt

    class RayHarness(RealHarness):
        def build_services(self):
            from models.testing import CheckpointSpec, tiny_unet_config, tiny_vae_config, write_random_checkpoint

            checkpoint = self.folders.models_dir / "checkpoints" / self.DEMO_CHECKPOINT
            write_random_checkpoint(checkpoint, CheckpointSpec("sd1", tiny_unet_config("sd1"), tiny_vae_config()))
            args = main.parse_args(["--base-directory", str(self.base), "--cpu", "--queue-db", str(self.db_path),
                                    "--ray", "auto", "--ray-workers", "2", "--ray-worker-cpus", "0.25"])
            services, _ = main.build_server(main.build_app(args))
            self.events, self.registry, self.engine = services.events, services.registry, services.engine
            self.store, self.worker, self.folders = services.store, services.worker, services.folders
            assert self.worker.wait_for_workers(2, 180), "worker actors did not start"
            return services

    async def generate(server) -> tuple[bytes, dict]:
        async with aiohttp.ClientSession() as s, Listener(s, server.url) as ws:
            status, body = await post(s, server.url + "/api/prompt", {"prompt": demo_prompt(), "client_id": ws.sid})
            assert status == 200, body
            pid = body["prompt_id"]
            assert await ws.until_recorded(pid, timeout_s=300) == "execution_success", ws.of(pid)[-3:]
            progress = [d["value"] for k, d in ws.of(pid) if k == "progress" and d["node"] == "3"]
            assert progress == [1, 2, 3]
            image = next(d for k, d in ws.of(pid) if k == "executed")["output"]["images"][0]
            async with s.get(server.url + "/api/view", params=image) as r:
                assert r.status == 200
                png = await r.read()
            _, history = await get(s, server.url + f"/api/history/{pid}")
            _, stats = await get(s, server.url + "/api/system_stats")
            # previews when the prompt asks for them: one binary frame per step, before the prompt ends
            status, body = await post(s, server.url + "/api/prompt", {"prompt": demo_prompt(steps=2),
                                      "client_id": ws.sid, "extra_data": {"preview_method": "latent2rgb"}})
            assert status == 200, body
            assert await ws.until_recorded(body["prompt_id"], timeout_s=300) == "execution_success"
            kinds = [k for k, _ in ws.of(body["prompt_id"])]
            assert kinds.count("binary") == 2 and kinds.index("binary") < kinds.index("execution_success"), kinds
            # an uploaded input image reaches the worker (shipped as bytes; its input folder is scratch)
            picture = io.BytesIO()
            Image.new("RGB", (8, 6), (200, 30, 90)).save(picture, "PNG")
            form = aiohttp.FormData()
            form.add_field("image", picture.getvalue(), filename="up.png", content_type="image/png")
            form.add_field("subfolder", "mine")
            status, uploaded = await post(s, server.url + "/api/upload/image", data=form)
            assert status == 200, uploaded
            load = {"1": {"class_type": "LoadImage", "inputs": {"image": "mine/up.png"}},
                    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "up"}}}
            status, body = await post(s, server.url + "/api/prompt", {"prompt": load, "client_id": ws.sid})
            assert status == 200, body
            assert await ws.until_recorded(body["prompt_id"], timeout_s=120) == "execution_success", \
                ws.of(body["prompt_id"])[-1][1]["exception_message"]
            saved = next(d for k, d in ws.of(body["prompt_id"]) if k == "executed")["output"]["images"][0]
            async with s.get(server.url + "/api/view", params=saved) as r:
                assert r.status == 200
                loaded = await r.read()
            assert Image.open(io.BytesIO(loaded)).convert("RGB").getpixel((3, 2)) == (200, 30, 90)
            return png, {"history": history[pid], "stats": stats, "loaded": loaded}

    single = RealHarness(tmp_path / "single").start()
    try:
        expected, single_info = asyncio.run(generate(single))
    finally:
        single.stop()
    cluster = RayHarness(tmp_path / "cluster").start()
    try:
        png, info = asyncio.run(generate(cluster))
    finally:
        cluster.stop()
    # byte-identical: the worker runs torch with the thread count single-machine mode uses (Ray's
    # OMP_NUM_THREADS=1 for a fractional-CPU actor gave other float reductions, other pixels)
    assert png == expected
    assert info["loaded"] == single_info["loaded"]
    assert not list((tmp_path / "cluster").rglob("input/mine/up.png"))[1:]   # only the front end's copy
    worker = info["history"]["plexus"]["worker"]
    assert worker.startswith("plexus-worker-") and info["history"]["plexus"]["attempts"] == 1
    workers = info["stats"]["workers"]           # GET /system_stats over HTTP
    assert sorted(w["id"] for w in workers) == ["plexus-worker-1", "plexus-worker-2"]
    for entry in workers:
        assert entry["device"]["type"] == "cpu" and "ram" in entry["memory"]
        assert set(entry["resident"]) == {"files", "loras"} and isinstance(entry["models"], list)
    ran = next(w for w in workers if w["id"] == worker)
    assert ran["resident"]["files"] == [RayHarness.DEMO_CHECKPOINT] and ran["prompts_run"] == 1
    assert any(RayHarness.DEMO_CHECKPOINT in str(m.get("source_key")) for m in ran["models"])
    assert info["stats"]["system"]["comfyui_version"] and info["stats"]["devices"]


def test_main_run_with_ray_writes_the_single_machine_png(ray_instance, tmp_path, capsys) -> None:
    """``main.py run --ray``: the workflow runs on a worker actor through the dispatcher, its PNG lands in
    this machine's output folder, byte-identical to ``main.py run`` without Ray."""
    import json

    import main
    from models.testing import CheckpointSpec, tiny_unet_config, tiny_vae_config, write_random_checkpoint
    from tests.web.conftest import RealHarness
    from tests.web.test_real_txt2img import demo_prompt

    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(demo_prompt()))
    outputs = []
    for name, extra in (("single", []), ("cluster", ["--ray", "auto", "--ray-workers", "1",
                                                     "--ray-worker-cpus", "0.25"])):
        base = tmp_path / name
        (base / "models" / "checkpoints").mkdir(parents=True)
        write_random_checkpoint(base / "models" / "checkpoints" / RealHarness.DEMO_CHECKPOINT,
                                CheckpointSpec("sd1", tiny_unet_config("sd1"), tiny_vae_config()))
        code = main.main(["--base-directory", str(base), "--cpu", "run", str(workflow), "--no-progress", *extra])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        written = [Path(line) for line in captured.out.split()]
        assert len(written) == 1 and written[0].is_relative_to(base / "output"), written
        outputs.append(written[0].read_bytes())
    assert outputs[0] == outputs[1]


def test_main_run_with_ray_and_no_worker_fails_instead_of_waiting(ray_instance, tmp_path, capsys) -> None:
    """``main.py run --ray`` with no worker that can join stops after ``--ray-join-timeout`` with a usage
    error naming the cause, instead of waiting for ever."""
    import json

    import main
    from tests.web.test_real_txt2img import demo_prompt

    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(demo_prompt()))
    started = time.monotonic()
    code = main.main(["--base-directory", str(tmp_path), "--cpu", "run", str(workflow), "--no-progress",
                      "--ray", "auto", "--ray-workers", "0", "--ray-join-timeout", "2"])
    captured = capsys.readouterr()
    assert code == main.EXIT_USAGE
    assert json.loads(captured.out)["error"]["type"] == "no_workers"
    assert "no Ray worker was up for 2 s" in captured.err
    assert time.monotonic() - started < 60
