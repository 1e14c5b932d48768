"""Routing is a pure function: residency first, same-model prompts together, pins honoured."""
from __future__ import annotations

from cluster.needs import ModelNeeds, pinned_worker, prompt_needs
from cluster.routing import PendingPrompt, WorkerView, match_score, route_by_residency, route_least_loaded, \
    route_round_robin
from cluster.scheduler import Scheduler


def needs(ckpt: str, *loras: str) -> ModelNeeds:
    return ModelNeeds(frozenset({ckpt}), frozenset(loras))


def prompt(pid: str, ckpt: str, *loras: str, pin: str | None = None, at: float = 0.0) -> PendingPrompt:
    return PendingPrompt(pid, needs(ckpt, *loras), pin, at)


def worker(wid: str, ckpt: str | None = None, *loras: str, free: bool = True, switched: float = 0.0,
           accepts: bool = True) -> WorkerView:
    resident = needs(ckpt, *loras) if ckpt else ModelNeeds()
    return WorkerView(wid, free, resident, switched, accepts)


def test_prompt_needs_reads_loader_inputs_and_ignores_links() -> None:
    api = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
           "5": {"class_type": "LoraLoader", "inputs": {"lora_name": "l1.safetensors", "model": ["4", 0]}},
           "6": {"class_type": "VAELoader", "inputs": {"vae_name": "v.pt"}},
           "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["5", 1]}}}
    assert prompt_needs(api) == ModelNeeds(frozenset({"a.safetensors", "v.pt"}), frozenset({"l1.safetensors"}))
    assert prompt_needs({}) == ModelNeeds()
    assert pinned_worker({"plexus": {"worker": "w2"}}) == "w2"
    assert pinned_worker({"plexus": {"worker": 3}}) is None and pinned_worker(None) is None


def test_match_score_orders_full_then_files_then_none() -> None:
    assert match_score(needs("a", "l"), needs("a", "l")) == 2
    assert match_score(needs("a", "l"), needs("a")) == 1
    assert match_score(needs("a"), needs("b")) == 0


def test_free_worker_holding_the_model_gets_it_even_behind_older_prompts() -> None:
    workers = [worker("w1", "a"), worker("w2", "b")]
    out = route_by_residency([prompt("p1", "b"), prompt("p2", "a")], workers)
    assert sorted(out) == [("p1", "w2"), ("p2", "w1")]


def test_lora_set_match_beats_checkpoint_only_match() -> None:
    workers = [worker("w1", "a"), worker("w2", "a", "l")]
    assert route_by_residency([prompt("p1", "a", "l")], workers) == [("p1", "w2")]


def test_no_holder_goes_to_least_recently_switched_free_worker() -> None:
    workers = [worker("w1", "x", switched=50.0), worker("w2", "y", switched=10.0), worker("w3", "z", switched=30.0)]
    assert route_by_residency([prompt("p1", "new")], workers) == [("p1", "w2")]


def test_switch_avoids_a_worker_whose_models_are_still_wanted() -> None:
    workers = [worker("w1", "a", switched=0.0), worker("w2", "b", switched=99.0), worker("w3", "a", free=False)]
    # p2 (model a) goes to w1; p1 (new model) must then switch w2 ...
    out = route_by_residency([prompt("p1", "new"), prompt("p2", "a")], workers)
    assert sorted(out) == [("p1", "w2"), ("p2", "w1")]
    # ... and with only w1 and w2 free and 'b' wanted later, the new model evicts w1's 'a' only if a is not queued
    out = route_by_residency([prompt("p1", "new"), prompt("p3", "b")],
                             [worker("w1", "a", switched=50.0), worker("w2", "b", switched=0.0)])
    assert sorted(out) == [("p1", "w1"), ("p3", "w2")]


def test_same_model_prompts_stick_to_their_busy_holder() -> None:
    # one 'a' prompt queued, its holder busy: the free 'b' worker does not switch to 'a' ...
    workers = [worker("w1", "a", free=False), worker("w2", "b")]
    assert route_by_residency([prompt("p1", "a")], workers) == []
    # ... until more 'a' prompts are queued than workers hold 'a'
    assert route_by_residency([prompt("p1", "a"), prompt("p2", "a")], workers) == [("p1", "w2")]


def test_a_prompt_waiting_too_long_takes_any_free_worker() -> None:
    workers = [worker("w1", "a", free=False), worker("w2", "b")]
    out = route_by_residency([prompt("p1", "a", at=0.0)], workers, now_s=500.0, max_wait_s=120.0)
    assert out == [("p1", "w2")]


def test_pins_are_honoured_and_never_given_elsewhere() -> None:
    workers = [worker("w1", "a"), worker("w2", "b", free=False)]
    assert route_by_residency([prompt("p1", "a", pin="w2")], workers) == []
    assert route_by_residency([prompt("p1", "b", pin="w1")], workers) == [("p1", "w1")]
    assert route_round_robin([prompt("p1", "a", pin="w2")], workers)[0] == []


def test_draining_workers_get_nothing() -> None:
    workers = [worker("w1", "a", accepts=False), worker("w2")]
    assert route_by_residency([prompt("p1", "a"), prompt("p2", "a")], workers) == [("p1", "w2")]


def test_each_free_worker_takes_at_most_one_prompt() -> None:
    pending = [prompt(f"p{i}", "a") for i in range(10)]
    out = route_by_residency(pending, [worker("w1", "a"), worker("w2", "a"), worker("w3")])
    assert len(out) == 3 and len({w for _, w in out}) == 3 and [p for p, _ in out] == ["p0", "p1", "p2"]


def test_baselines_are_model_blind_fifo() -> None:
    workers = [worker("w1", "a"), worker("w2", "b"), worker("w3", "c")]
    out, turn = route_round_robin([prompt("p1", "c"), prompt("p2", "a")], workers, turn=1)
    assert out == [("p1", "w2"), ("p2", "w3")] and turn == 0
    busy = [WorkerView("w1", busy_s=5.0), WorkerView("w2", busy_s=1.0)]
    assert route_least_loaded([prompt("p1", "a")], busy) == [("p1", "w2")]


def test_scheduler_tracks_switches_and_reports() -> None:
    scheduler = Scheduler()
    scheduler.add_worker("w1")
    assert scheduler.started("w1", "p1", needs("a"), now_s=5.0) is True
    scheduler.finished("w1", now_s=8.0)
    assert scheduler.workers["w1"].resident == needs("a") and scheduler.workers["w1"].busy_s == 3.0
    assert scheduler.started("w1", "p2", needs("a"), now_s=9.0) is False
    scheduler.finished("w1", now_s=10.0, resident=needs("a", "l"))
    assert scheduler.plan([prompt("p3", "a", "l"), prompt("p4", "b")], now_s=10.0) == [("p3", "w1")]
    assert scheduler.workers["w1"].model_loads == 1


def test_worker_threads_drop_rays_default_or_take_the_given_count(monkeypatch) -> None:
    from cluster.ray_pool import use_threads

    import os
    import sys

    monkeypatch.delitem(sys.modules, "torch", raising=False)   # this process's torch keeps its threads
    monkeypatch.setenv("OMP_NUM_THREADS", "1")      # what Ray sets for a fractional-CPU actor
    use_threads(None)

    assert "OMP_NUM_THREADS" not in os.environ       # torch picks its single-machine default
    use_threads(3)
    assert os.environ["OMP_NUM_THREADS"] == "3"


def test_stale_scratch_of_dead_workers_is_removed(tmp_path) -> None:
    import os
    import subprocess
    import sys

    from cluster.ray_pool import remove_stale_scratch

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = tmp_path / f"plexus-plexus-worker-3-{dead.stdout.strip()}"
    alive = tmp_path / f"plexus-plexus-worker-4-{os.getppid()}"
    for folder in (gone, alive):
        (folder / "output").mkdir(parents=True)
    assert remove_stale_scratch(tmp_path) == [gone]
    assert not gone.exists() and alive.exists()


def test_input_files_named_by_a_prompt_are_shipped_and_written_inside_the_folder(tmp_path) -> None:
    from cluster.inputs import input_files, write_input_files
    from storage.folders import Folders

    folders = Folders(tmp_path / "front")
    folders.ensure_dirs()
    (folders.input / "sub").mkdir()
    (folders.input / "sub" / "a.png").write_bytes(b"A")
    (folders.output / "o.png").write_bytes(b"O")
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "sub/a.png"}},
              "2": {"class_type": "LoadImage", "inputs": {"image": "o.png [output]"}},
              "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
              "4": {"class_type": "LoadImage", "inputs": {"image": "../../etc/passwd"}}}
    files = sorted(input_files(prompt, folders))
    assert files == [["input", "sub/a.png", b"A"], ["output", "o.png", b"O"]]
    worker = Folders(tmp_path / "worker")
    written = write_input_files(files, worker.directory)
    assert (worker.input / "sub" / "a.png").read_bytes() == b"A" and (worker.output / "o.png").read_bytes() == b"O"
    assert len(written) == 2
    import pytest

    with pytest.raises(ValueError):
        write_input_files([["input", "../x.png", b"X"]], worker.directory)
