"""`kill -USR1 <harness pid>` prints where a running harness is: every thread's stack and every asyncio task's.

A run that seems stuck (a teardown that does not end, a wait that never returns) can then be read rather than
guessed at; the tests send it before they give up on a harness process, so a hang in CI says where it hung.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import traceback
from types import FrameType

SIGNAL = signal.SIGUSR1
HEADER = "harness: stack dump (SIGUSR1)"


def dump() -> str:
    """Every thread's stack, then every task of the running event loop (if any) with where it waits."""
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = [HEADER]
    for ident, frame in sys._current_frames().items():
        parts.append(f"--- thread {names.get(ident, ident)}")
        parts.append("".join(traceback.format_stack(frame)).rstrip())
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:  # no loop runs in this thread
        tasks = set()
    for task in sorted(tasks, key=lambda t: t.get_name()):
        parts.append(f"--- task {task.get_name()} (cancelling {task.cancelling()}): {task.get_coro()!r}")
        parts.extend(_awaiting(task.get_coro()))
    return "\n".join(parts) + "\n"


def _awaiting(coro: object) -> list[str]:
    """The chain of awaits a suspended coroutine is in, outermost first, down to the future it waits on (a
    task's own stack shows only its outermost frame)."""
    lines = []
    for _ in range(64):
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            if coro is not None:
                lines.append(f"    awaiting {coro!r}")
            break
        lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await",
                                                                                                   None)
    return lines


def _on_signal(_signum: int, _frame: FrameType | None) -> None:
    sys.stderr.write(dump())
    sys.stderr.flush()


def install() -> None:
    """Dump on SIGUSR1 (main thread only, where Python runs signal handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(SIGNAL, _on_signal)
