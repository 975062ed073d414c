"""What the container runtimes (docker, swarm) share about freezing: pause and resume by name over their own
`_freeze`, remembering what is frozen so teardown can thaw it, and the first steps of their teardown (stop the
counters' sampler, thaw every frozen instance so it can receive its SIGTERM)."""

from __future__ import annotations

import asyncio
import contextlib


class Freezing:
    """Mixin: the runtime sets `frozen` and `_stats` (its sampler task) and implements `_freeze`."""

    frozen: set[str]
    _stats: asyncio.Task[None] | None

    def _freeze(self, name: str, frozen: bool) -> None:
        raise NotImplementedError

    def pause(self, name: str) -> None:
        """The grey failure: the whole instance frozen (cgroup freezer, or its node's Engine)."""
        self._freeze(name, True)
        self.frozen.add(name)

    def resume(self, name: str) -> None:
        if name in self.frozen:
            self._freeze(name, False)
            self.frozen.discard(name)

    async def _stop_sampling_and_thaw(self) -> None:
        if self._stats:
            self._stats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats
            self._stats = None
        for name in list(self.frozen):
            with contextlib.suppress(Exception):
                self.resume(name)
