"""Queue control: interrupt, delete, clear, cancel through the jobs API, and per-client events."""

from __future__ import annotations

import asyncio
import threading

import aiohttp

from . import fakes
from .client import Listener, get, post, queue


async def wait_entered(name: str) -> None:
    event = fakes.ENTERED.setdefault(name, threading.Event())
    await asyncio.get_running_loop().run_in_executor(None, event.wait, 30)


def test_interrupt_stops_the_running_prompt_and_the_queue_goes_on(harness) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as s, Listener(s, harness.url) as ws:
            blocked = await queue(s, harness.url, fakes.txt2img(seed=1, gate="never"), client_id=ws.sid)
            after = await queue(s, harness.url, fakes.txt2img(seed=2), client_id=ws.sid)
            await wait_entered("never")
            status, q = await get(s, harness.url + "/api/queue")
            assert [e[1] for e in q["queue_running"]] == [blocked]
            assert [e[1] for e in q["queue_pending"]] == [after]
            _, jobs = await get(s, harness.url + "/api/jobs?status=in_progress,pending&limit=200&offset=0")
            assert [(j["id"], j["status"]) for j in jobs["jobs"]] == [
                (blocked, "in_progress"),
                (after, "pending"),
            ]
            assert (await post(s, harness.url + "/interrupt", {"prompt_id": "someone-else"}))[0] == 200
            assert (await post(s, harness.url + "/api/interrupt", {"prompt_id": blocked}))[0] == 200
            assert await ws.until_end(blocked) == "execution_interrupted"
            interrupted = next(d for k, d in ws.of(blocked) if k == "execution_interrupted")
            assert interrupted["node_type"] == "Gate" and interrupted["node_id"] == "2"
            assert await ws.until_end(after) == "execution_success"
            _, jobs = await get(s, harness.url + "/api/jobs?status=cancelled")
            assert [j["id"] for j in jobs["jobs"]] == [blocked]
            # The whole-server interrupt (no prompt id), as the editor's Stop button sends it.
            third = await queue(s, harness.url, fakes.txt2img(seed=3, gate="never2"), client_id=ws.sid)
            await wait_entered("never2")
            assert (await post(s, harness.url + "/interrupt", data=b""))[0] == 200
            assert await ws.until_end(third) == "execution_interrupted"

    asyncio.run(scenario())


def test_queue_delete_clear_and_jobs_cancel(harness) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as s, Listener(s, harness.url) as ws:
            running = await queue(s, harness.url, fakes.txt2img(seed=1, gate="hold"), client_id=ws.sid)
            await wait_entered("hold")
            pending = [
                await queue(s, harness.url, fakes.txt2img(seed=10 + i), client_id=ws.sid) for i in range(4)
            ]
            front = await queue(s, harness.url, fakes.txt2img(seed=99), client_id=ws.sid, front=True)
            _, q = await get(s, harness.url + "/queue")
            assert [e[1] for e in q["queue_pending"]] == [front] + pending
            await ws.wait_for(
                lambda: ("status", {"status": {"exec_info": {"queue_remaining": 6}}}) in ws.messages
            )
            assert (await post(s, harness.url + "/queue", {"delete": [pending[0]]}))[0] == 200
            assert (await post(s, harness.url + "/api/jobs/" + pending[1] + "/cancel"))[0] == 200
            assert (await post(s, harness.url + "/api/jobs/cancel", {"job_ids": [pending[2]]}))[0] == 200
            _, q = await get(s, harness.url + "/queue")
            assert [e[1] for e in q["queue_pending"]] == [front, pending[3]]
            assert (await post(s, harness.url + "/api/queue", {"clear": True}))[0] == 200
            _, q = await get(s, harness.url + "/queue")
            assert q["queue_pending"] == [] and [e[1] for e in q["queue_running"]] == [running]
            assert await get(s, harness.url + "/prompt") == (200, {"exec_info": {"queue_remaining": 1}})
            # Cancelling a running job interrupts it.
            assert (await post(s, harness.url + "/api/jobs/" + running + "/cancel"))[0] == 200
            assert await ws.until_end(running) == "execution_interrupted"
            await ws.wait_for(
                lambda: (
                    ws.messages[-1][0] == "status"
                    and ws.messages[-1][1]["status"]["exec_info"]["queue_remaining"] == 0
                    or (ws.messages[-1][0] == "executing" and ws.messages[-1][1]["node"] is None)
                )
            )
            # History: delete one, clear all.
            done = await queue(s, harness.url, fakes.txt2img(seed=5), client_id=ws.sid)
            await ws.until_recorded(done)
            _, history = await get(s, harness.url + "/history")
            assert set(history) == {running, done}
            _, newest = await get(s, harness.url + "/history?max_items=1&offset=-1")
            assert list(newest) == [done]
            assert (await post(s, harness.url + "/history", {"delete": [running]}))[0] == 200
            assert set((await get(s, harness.url + "/history"))[1]) == {done}
            assert (await post(s, harness.url + "/api/history", {"clear": True}))[0] == 200
            assert (await get(s, harness.url + "/history"))[1] == {}
            _, status = await get(s, harness.url + f"/prompt/{pending[0]}/status")
            assert status["error"]["type"] == "not_found"

    asyncio.run(scenario())


def test_concurrent_clients_each_receive_only_their_own_progress(harness) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            listeners = [Listener(s, harness.url) for _ in range(4)]
            for listener in listeners:
                await listener.__aenter__()
            try:
                ids = await asyncio.gather(
                    *[
                        queue(s, harness.url, fakes.txt2img(seed=100 + i, steps=4), client_id=listener.sid)
                        for i, listener in enumerate(listeners)
                    ]
                )
                for listener, pid in zip(listeners, ids):
                    assert await listener.until_end(pid) == "execution_success"
                for listener, pid in zip(listeners, ids):
                    own = [d for k, d in listener.messages if isinstance(d, dict) and "prompt_id" in d]
                    assert own and all(d["prompt_id"] == pid for d in own)
                    assert sum(1 for k, _ in listener.messages if k == "progress") == 4
                    assert sum(1 for k, _ in listener.messages if k == "binary") == 4
                    # Queue status is for everyone.
                    assert any(k == "status" for k, _ in listener.messages[2:])
            finally:
                for listener in listeners:
                    await listener.__aexit__(None, None, None)

    asyncio.run(scenario())


def test_legacy_clients_get_type_1_previews_and_a_reconnect_keeps_the_client_id(harness) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            async with Listener(s, harness.url, client_id="fixed-client", preview_metadata=False) as ws:
                assert ws.sid == "fixed-client"
                pid = await queue(s, harness.url, fakes.txt2img(seed=7, steps=2), client_id="fixed-client")
                await ws.until_end(pid)
                frames = [d for k, d in ws.messages if k == "binary"]
                assert len(frames) == 2 and frames[0][:8] == b"\x00\x00\x00\x01\x00\x00\x00\x01"

    asyncio.run(scenario())


def test_jobs_pages_newest_first_and_filters_by_status(harness) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            ids = []
            for i in range(5):
                status, body = await post(
                    s,
                    harness.url + "/prompt?wait=true",
                    {"prompt": fakes.txt2img(seed=200 + i, fail=(i == 2))},
                )
                ids.append(body["prompt_id"])
            url = harness.url + "/api/jobs?status=completed,failed,cancelled"
            _, page1 = await get(s, url + "&limit=2&offset=0")
            _, page2 = await get(s, url + "&limit=2&offset=2")
            _, page3 = await get(s, url + "&limit=2&offset=4")
            assert [j["id"] for j in page1["jobs"] + page2["jobs"] + page3["jobs"]] == ids[::-1]
            assert page1["pagination"] == {"offset": 0, "limit": 2, "total": 5, "has_more": True}
            assert page3["pagination"]["has_more"] is False
            _, asc = await get(s, url + "&limit=10&sort_order=asc")
            assert [j["id"] for j in asc["jobs"]] == ids
            _, failed = await get(s, harness.url + "/api/jobs?status=failed")
            assert [j["id"] for j in failed["jobs"]] == [ids[2]] and failed["pagination"]["total"] == 1
            _, completed = await get(s, harness.url + "/api/jobs?status=completed&limit=2")
            assert [j["id"] for j in completed["jobs"]] == [ids[4], ids[3]]
            assert completed["pagination"]["total"] == 4

    asyncio.run(scenario())
