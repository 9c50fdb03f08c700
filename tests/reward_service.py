"""A RewardService (`trimtab reward`) on a thread's event loop, for the synchronous tests that call it
(tests/learner, tests/serving)."""

from __future__ import annotations

import asyncio
import threading

from learner.reward_service import start_reward_service
from trimtab.config import TrimtabConfig


class Served:
    """A RewardService on a thread's event loop, for the synchronous callers the tests are."""

    def __init__(self, config: TrimtabConfig, reward_version: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running = asyncio.run_coroutine_threadsafe(start_reward_service(config, reward_version), self.loop).result(
            60
        )
        self.address = f"127.0.0.1:{self.running.port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.running.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
