"""The CUDA streaming path (side stream, events, prefetch) run on the CPU with torch.cuda faked.

No GPU here: this checks the bookkeeping of the asynchronous path (what is prefetched, when the
compute stream waits, what the ledger counts), not CUDA itself."""
from __future__ import annotations

import contextlib

import torch

from model_management.streaming import Streamer, offload_units, plan_load
from model_management.weights import DeviceLedger, ModuleWeights
from tests.model_management.toys import ToyUNet, make


class FakeStream:
    def __init__(self, *args, **kwargs) -> None:
        self.waited: list = []

    def wait_stream(self, other) -> None:
        pass

    def wait_event(self, event) -> None:
        assert event.is_recorded, "the compute stream waited on an event nobody recorded"
        self.waited.append(event)


class FakeEvent:
    def __init__(self) -> None:
        self.is_recorded = False

    def record(self, stream) -> None:
        self.is_recorded = True


def test_async_streaming_prefetches_one_unit_ahead_within_the_budget(monkeypatch) -> None:
    compute = FakeStream()
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: compute)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, s: None, raising=False)

    unet = make(ToyUNet, 0)
    x, sigma, context = torch.randn(1, 4, 8, 8), torch.full((1,), 2.0), torch.randn(1, 4, 16)
    with torch.no_grad():
        expected = unet(x, sigma, context)
    weights = ModuleWeights(unet)
    units = offload_units(unet, weights, ToyUNet.OFFLOAD_BLOCKS)
    plan = plan_load(units, 10**9, prefetch=True, max_resident_bytes=0)
    ledger = DeviceLedger()
    fetched: list[str] = []

    def fetch(key: str, non_blocking: bool) -> torch.Tensor:
        assert non_blocking
        fetched.append(key)
        return weights.home[key]

    streamer = Streamer(weights, plan.streamed, torch.device("cpu"), None, ledger, fetch, is_async=True)
    streamer.install()
    with torch.no_grad():
        got = unet(x, sigma, context)
    assert torch.equal(got, expected)
    assert len(compute.waited) == len(plan.streamed)            # every unit waited for its copy once
    assert ledger.bytes == 0 and ledger.peak_bytes <= plan.stream_reserve_bytes
    assert sorted(fetched) == sorted(weights.slots)              # each weight copied exactly once
    streamer.remove()
    assert ledger.bytes == 0
