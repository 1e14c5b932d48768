"""Load: 200 prompts from 8 clients, the server restarted once in the middle; nothing is lost.

Run twice: on the test nodes (fast), and on the whole stack with a tiny random-weight SD1.5 model.
"""

from __future__ import annotations

import asyncio
import gc
import uuid

import aiohttp
import psutil
import pytest

from . import fakes
from .client import get
from .conftest import Harness, RealHarness
from .test_real_txt2img import demo_prompt

CLIENTS = 8
PER_CLIENT = 25


def plain_prompt(client: int, index: int) -> dict:
    return fakes.txt2img(seed=client * 1000 + index, steps=2, prefix=f"load/c{client}")


def tiny_model_prompt(client: int, index: int) -> dict:
    prompt = demo_prompt(steps=1, size=32)
    prompt["3"]["inputs"]["seed"] = client * 1000 + index
    prompt["9"]["inputs"]["filename_prefix"] = f"load/c{client}"
    return prompt


@pytest.mark.parametrize("kind", ["test-nodes", pytest.param("tiny-model", marks=pytest.mark.slow)])
def test_200_prompts_from_8_clients_survive_a_restart(tmp_path, kind) -> None:
    stack, make_prompt = {"test-nodes": (Harness, plain_prompt),
                          "tiny-model": (RealHarness, tiny_model_prompt)}[kind]
    server = stack(tmp_path).start()
    port = server.port
    process = psutil.Process()

    async def scenario() -> list[str]:
        nonlocal server
        up = asyncio.Event()
        up.set()
        accepted: list[str] = []
        half_accepted = asyncio.Event()
        restarted = asyncio.Event()
        base = f"http://127.0.0.1:{port}"

        async def submit(session: aiohttp.ClientSession, client: int, index: int) -> None:
            prompt_id = f"c{client}-{index}-{uuid.uuid4().hex[:8]}"
            body = {
                "prompt": make_prompt(client, index),
                "client_id": f"client-{client}",
                "prompt_id": prompt_id,
            }
            while True:
                await up.wait()
                try:
                    async with session.post(base + "/prompt", json=body) as r:
                        answer = await r.json()
                        if r.status == 200 or answer.get("error", {}).get("type") == "duplicate_prompt_id":
                            accepted.append(prompt_id)  # a retry after a lost answer is still one prompt
                            if len(accepted) >= CLIENTS * PER_CLIENT // 2:
                                half_accepted.set()
                            return
                        raise AssertionError(answer)
                except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
                    await asyncio.sleep(0)  # the server is going down: wait for `up` again

        async def client_loop(client: int) -> None:
            async with aiohttp.ClientSession() as session:
                for index in range(PER_CLIENT):
                    await submit(session, client, index)

        async def restarter() -> None:
            nonlocal server
            loop = asyncio.get_running_loop()
            await half_accepted.wait()
            up.clear()
            in_queue_before_stop = server.store.queue_remaining()
            await loop.run_in_executor(None, server.stop)
            print(f"restart with {in_queue_before_stop} prompts queued")
            server = stack(tmp_path, port=port)
            await loop.run_in_executor(None, server.start)
            up.set()
            restarted.set()

        await asyncio.gather(restarter(), *[client_loop(c) for c in range(CLIENTS)])
        assert restarted.is_set()
        return accepted

    accepted = asyncio.run(scenario())
    assert len(accepted) == len(set(accepted)) == CLIENTS * PER_CLIENT
    assert server.worker.wait_idle(120)

    async def check() -> None:
        async with aiohttp.ClientSession() as s:
            _, history = await get(s, server.url + "/history")
            statuses = {pid: history[pid]["plexus"]["status"] if pid in history else None for pid in accepted}
            assert all(status == "success" for status in statuses.values()), {
                k: v for k, v in statuses.items() if v != "success"
            }
            _, jobs = await get(s, server.url + "/api/jobs?status=completed&limit=500")
            assert jobs["pagination"]["total"] == len(accepted)

    asyncio.run(check())
    outputs = list((tmp_path / "output" / "load").rglob("*.png"))
    assert len(outputs) >= len(accepted) - 1  # an interrupted-and-rerun prompt may have saved twice

    # RSS is stable: once warm, another 200 prompts from 8 clients leave the process's RSS where it was.
    async def more_load() -> None:
        async with aiohttp.ClientSession() as s:
            async def client(c: int) -> None:
                for i in range(PER_CLIENT):
                    async with s.post(server.url + "/prompt", json={"prompt": make_prompt(c + 100, i)}) as r:
                        assert r.status == 200, await r.text()
            await asyncio.gather(*[client(c) for c in range(CLIENTS)])

    gc.collect()
    rss_before = process.memory_info().rss
    asyncio.run(more_load())
    assert server.worker.wait_idle(120)
    gc.collect()
    growth_mb = (process.memory_info().rss - rss_before) / 2**20
    server.stop()
    assert growth_mb < 32, f"RSS grew {growth_mb:.1f} MB over 200 more prompts"
