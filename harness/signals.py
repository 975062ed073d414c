"""SIGINT always means "stop in order and keep what was measured", however the process was started.

A shell starts a background job (`harness run ... &` in a script, a CI runner's step, a test suite run with
`&`) with SIGINT ignored, and Python then keeps it ignored: asyncio's Ctrl-C handling never installs, and a
run would ignore the SIGINT that a sweep sends a trial past its time-out, or that a user sends with `kill
-INT`, and run to its end (measured: a background `harness run` stays up after `kill -INT`). Every command
line takes SIGINT back first.
"""

from __future__ import annotations

import signal
import threading


def take_sigint() -> None:
    """KeyboardInterrupt on SIGINT (Python's default), also where the process inherited SIGINT ignored."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
