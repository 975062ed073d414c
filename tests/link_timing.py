"""The timing bounds the link tests hold a delay to (tests/test_links_proxy.py, tests/test_links_control.py)."""

from __future__ import annotations

LO = "127.0.0.1"
# A delay must never come early. How late it may be depends on load: other test files start whole
# deployments on the same few CPUs, which can hold up this process for milliseconds. So these bounds only
# catch gross or growing error; test_delay_accuracy_on_a_quiet_machine checks the 2-3 ms promise.
EARLY_SLACK = 0.0003
LATE_SLACK = 0.010
LATE_SLACK_MEDIAN = 0.025
ACCURACY = 0.003
