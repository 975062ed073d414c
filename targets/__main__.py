"""`python -m targets`: run the one service described by MANOBENCH_SPEC until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import ctypes
import signal
import sys

from protocol.events import EventSink
from protocol.spec import ServiceSpec
from targets import orphan

ROLES = {
    "slm": ("targets.slm", "Slm"),
    "worker": ("targets.worker", "Worker"),
    "module": ("targets.module", "Module"),
    "monolith": ("targets.monolith", "Monolith"),
    "witness": ("targets.witness", "Witness"),
}


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this service if the harness that started it dies (belt and braces)."""
    if sys.platform == "linux":
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


async def serve(spec: ServiceSpec) -> None:
    import importlib

    module_name, class_name = ROLES[spec.role]
    sink = EventSink(spec.collector, spec.id, spec.run, spec.secret)
    bus = None
    if spec.bus:  # transport amqp: connected before the service exists, so its planes can subscribe
        from targets.transport.amqp import open_bus

        bus = await open_bus(spec, sink)
    service = getattr(importlib.import_module(module_name), class_name)(spec, sink)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    watchdog = asyncio.create_task(orphan.watch(sink, orphan.grace())) if spec.collector else None
    await stop.wait()
    if watchdog is not None:
        watchdog.cancel()
    planes = getattr(service, "planes", None)
    sink.emit("stopping", **({"refused": planes.refusals[0]} if planes is not None else {}))
    await service.stop()
    if bus is not None:
        await bus.close()
    sink.close()


def main() -> None:
    spec = ServiceSpec.from_env()
    if spec.role not in ROLES:
        raise SystemExit(f"targets: unknown role {spec.role!r} (known: {', '.join(ROLES)})")
    _die_with_parent()
    asyncio.run(serve(spec))


if __name__ == "__main__":
    main()
