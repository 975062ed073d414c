"""The environment names that label every process a run starts, in a module of their own so that whoever
finds or ends those processes (leftovers, the brokers) reads them without importing a runtime."""

from __future__ import annotations

RUN_ENV = "MANOBENCH_RUN"
OWNER_ENV = "MANOBENCH_OWNER"  # pid of the harness process that started it: dead owner = leftover
SESSION_ENV = "MANOBENCH_SESSION"  # passed through: lets a test suite find exactly what it started
