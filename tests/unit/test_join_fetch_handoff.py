"""streams.faust_adapter, the fetcher's inline hand-off to the join's stream: a callback that
suspends is resumed exactly where it stopped."""

from __future__ import annotations

import asyncio
import contextlib

from safeloop.streams.faust_adapter import _Resume


async def _steps(log: list[str], gate: asyncio.Future[None]) -> str:
    log.append("before")
    await gate
    log.append("after")
    return "done"


def test_a_suspended_callback_resumes_and_returns_its_value() -> None:
    async def main() -> None:
        log: list[str] = []
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        coro = _steps(log, gate)
        first = coro.send(None)  # runs inline up to the first suspension
        assert log == ["before"]
        task = asyncio.ensure_future(_Resume(coro, first))
        await asyncio.sleep(0)
        gate.set_result(None)
        assert await task == "done"
        assert log == ["before", "after"]

    asyncio.run(main())


def test_cancelling_the_rest_cancels_the_callback() -> None:
    async def main() -> None:
        log: list[str] = []
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        coro = _steps(log, gate)
        first = coro.send(None)
        task = asyncio.ensure_future(_Resume(coro, first))
        await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()
        assert log == ["before"]

    asyncio.run(main())
