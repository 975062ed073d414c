"""Load generation with Locust, run headless in its own process.

`locustfile.py` is the Locust side (gevent, imported only by the Locust process); `locust_runner.py` is the
harness side (asyncio, never imports locust: Locust monkey-patches the standard library with gevent on
import, which must not happen in the harness process). `builtin` is the harness's own asyncio BSS
(harness.load.bss), for runs that need no Locust.
"""

LOADS = ("locust", "builtin")  # the load generators a run may use (`--load`)
