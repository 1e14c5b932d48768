"""Load: 200 prompts from 8 clients, the server restarted once in the middle; nothing is lost."""
from __future__ import annotations

import asyncio
import gc
import uuid

import aiohttp
import psutil

from . import fakes
from .client import get
from .conftest import Harness

CLIENTS = 8
PER_CLIENT = 25


def test_200_prompts_from_8_clients_survive_a_restart(tmp_path) -> None:
    server = Harness(tmp_path).start()
    port = server.port
    process = psutil.Process()
    rss_samples: list[int] = []

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
            body = {"prompt": fakes.txt2img(seed=client * 1000 + index, steps=2, prefix=f"load/c{client}"),
                    "client_id": f"client-{client}", "prompt_id": prompt_id}
            while True:
                await up.wait()
                try:
                    async with session.post(base + "/prompt", json=body) as r:
                        answer = await r.json()
                        if r.status == 200 or answer.get("error", {}).get("type") == "duplicate_prompt_id":
                            accepted.append(prompt_id)   # a retry after a lost answer is still one prompt
                            if len(accepted) >= CLIENTS * PER_CLIENT // 2:
                                half_accepted.set()
                            return
                        raise AssertionError(answer)
                except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
                    await asyncio.sleep(0)   # the server is going down: wait for `up` again

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
            gc.collect()
            rss_samples.append(process.memory_info().rss)
            server = Harness(tmp_path, port=port)
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
            assert all(status == "success" for status in statuses.values()), \
                {k: v for k, v in statuses.items() if v != "success"}
            _, jobs = await get(s, server.url + "/api/jobs?status=completed&limit=500")
            assert jobs["pagination"]["total"] == len(accepted)
    asyncio.run(check())
    gc.collect()
    rss_samples.append(process.memory_info().rss)
    server.stop()
    growth_mb = (rss_samples[-1] - rss_samples[0]) / 2**20
    assert growth_mb < 64, f"RSS grew {growth_mb:.1f} MB over the second half of the load"
    outputs = list((tmp_path / "output" / "load").rglob("*.png"))
    assert len(outputs) >= len(accepted) - 1   # an interrupted-and-rerun prompt may have saved twice
