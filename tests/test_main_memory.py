"""/system_stats and /free wiring in main.py: the manager's report, and freeing between prompts."""
import threading

from execution.events import EventBus
from execution.executor import Engine
from execution.registry import NodeRegistry
from execution.store import PromptStore
from execution.worker import Worker
import main
from nodes import services
from storage.folders import Folders


def test_system_stats_reports_the_device_and_dtype_choices(tmp_path):
    services.install(services.NodeServices(Folders(tmp_path)))
    try:
        stats = main.system_stats()
    finally:
        services.install(None)
    assert stats["system"]["pytorch_version"].startswith("2.")
    device = stats["devices"][0]
    assert device["type"] == "cpu" and device["vram_total"] > 0
    assert set(stats["plexus"]["dtypes"]) >= {"diffusion_model", "vae"}
    assert stats["plexus"]["attention"] == "auto" and stats["plexus"]["convolutions_prepacked"] is True
    assert stats["plexus"]["models"] == []


def test_free_runs_on_the_worker_thread_between_prompts(tmp_path):
    store = PromptStore(None)
    engine = Engine(NodeRegistry(), EventBus())
    worker = Worker(store, engine, engine.events).start()
    ran_on = []
    done = threading.Event()
    try:
        worker.run_between_prompts(lambda: (ran_on.append(threading.current_thread().name), done.set()))
        assert done.wait(10)
    finally:
        worker.stop()
    assert ran_on == [worker.worker_id]
