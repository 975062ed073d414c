"""The verdict's evidence rules (docs/checker.md): a history that cannot support a pass is `unknown` with its
reason, `fail` only where it proves a loss or a duplicate; hand-built histories, both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import checker
from harness.checker import Evidence
from harness.history.reading import HOLE_KINDS, classify, parse_line, read_history


def _ev(kind: str, t: float, svc: str = "bss", **fields) -> dict:
    return {"t": t, "wall": 1e9 + t, "svc": svc, "kind": kind, **fields}


def history(requests: int = 3, completed: int | None = None, twice: int = 0) -> list[dict]:
    done = requests if completed is None else completed
    events = [_ev("submitted", i, req=f"r{i}", to=1) for i in range(requests)]
    events += [_ev("completed", 10 + i, req=f"r{i}", by="m", n=1) for i in range(done)]
    events += [_ev("completed", 20 + i, req=f"r{i}", by="m", n=2) for i in range(twice)]
    return events


def test_a_whole_history_passes_and_says_nothing_against_it():
    v = checker.verdict(history(3), evidence=Evidence(expected_requests=3))
    assert (v.status, v.reason) == ("pass", "")


def test_an_empty_history_is_unknown_not_pass():
    v = checker.verdict([], evidence=Evidence(expected_requests=4))
    assert v.status == "unknown"
    assert "empty history" in v.reason and "0 of 4 configured requests" in v.reason


def test_a_history_cut_short_is_unknown_and_its_missing_completions_are_not_a_proven_loss():
    v = checker.verdict(history(3, completed=1), holes={"torn_lines": 1}, evidence=Evidence(expected_requests=8))
    assert v.status == "unknown"
    assert "3 of 8 configured requests" in v.reason and "1 torn lines" in v.reason
    assert "which the holes could hide" in v.reason


def test_more_submissions_than_configured_is_unknown():
    v = checker.verdict(history(8), evidence=Evidence(expected_requests=4))
    assert v.status == "unknown" and "more than configured" in v.reason


@pytest.mark.parametrize("hole", (*HOLE_KINDS, "events_lost", "collector_bad_lines", "capture_drops"))
def test_every_kind_of_hole_makes_a_whole_looking_history_unknown(hole):
    v = checker.verdict(history(3), holes={hole: 1}, evidence=Evidence(expected_requests=3))
    assert v.status == "unknown" and hole.replace("_", " ") in v.reason


def test_a_loss_with_nothing_that_could_hide_it_fails():
    v = checker.verdict(history(3, completed=2), evidence=Evidence(expected_requests=3))
    assert v.status == "fail" and "1 submitted request(s) never completed" in v.reason


def test_a_loss_beside_a_capture_drop_still_fails_packets_are_not_notices():
    v = checker.verdict(history(3, completed=2), holes={"capture_drops": 5}, evidence=Evidence(expected_requests=3))
    assert v.status == "fail"


def test_a_duplicate_is_proven_whatever_else_is_missing():
    v = checker.verdict(history(3, twice=1), holes={"unreadable_lines": 2}, evidence=Evidence(expected_requests=5))
    assert v.status == "fail" and "completed more than once" in v.reason


def test_a_doctored_folder_proves_nothing():
    v = checker.verdict(history(3, twice=1), evidence=Evidence(expected_requests=3,
                                                               integrity=("events.jsonl differs from its digest",)))
    assert v.status == "unknown" and "differs from its digest" in v.reason


def test_an_unsealed_folder_is_unknown_but_its_duplicates_still_count():
    assert checker.verdict(history(3), evidence=Evidence(3, sealed=False)).status == "unknown"
    assert checker.verdict(history(3, twice=1), evidence=Evidence(3, sealed=False)).status == "fail"
    assert checker.verdict(history(3, completed=2), evidence=Evidence(3, sealed=False)).status == "unknown"


def test_a_completion_of_a_request_never_submitted_is_unknown():
    events = [*history(2), _ev("completed", 30, req="ghost", by="m", n=1)]
    v = checker.verdict(events, evidence=Evidence(expected_requests=2))
    assert v.status == "unknown" and "never submitted" in v.reason and v.completed == 2


@pytest.mark.parametrize("line,hole", [
    (b"[1]", "unreadable_lines"), (b"{}", "unreadable_lines"), (b"null", "unreadable_lines"),
    (b'{"t": "1", "svc": "bss", "kind": "completed", "req": "r"}', "unreadable_lines"),
    (b'{"t": NaN, "svc": "bss", "kind": "completed", "req": "r"}', "unreadable_lines"),
    (b'{"t": 1e999, "svc": "bss", "kind": "completed", "req": "r"}', "unreadable_lines"),
    (b'{"t": true, "svc": "bss", "kind": "completed", "req": "r"}', "unreadable_lines"),
    (b'{"t": 1, "svc": 7, "kind": "completed"}', "unreadable_lines"),
    (b'{"t": 1, "svc": "bss", "kind": "teleported"}', "unknown_kinds"),
    (b'{"t": 1, "svc": "bss", "kind": "completed", "by": "m", "n": 1}', "malformed_events"),
    (b'{"t": 1, "svc": "bss", "kind": "completed", "req": 5, "by": "m", "n": 1}', "malformed_events"),
    (b'{"t": 1, "svc": "s", "kind": "task_start", "req": "r", "task": "3", "name": "x"}', "malformed_events"),
    (b'{"t": 1, "svc": "s", "kind": "hb_sent", "seq": 1, "peers": 1}', "malformed_events"),
    (b"\xff\xfe\x00binary", "unreadable_lines"), (b"[" * 100000, "unreadable_lines"), (b"{broken", "unreadable_lines"),
])
def test_lines_that_are_not_events_are_named_holes(line, hole):
    assert parse_line(line) == (None, hole)


def test_a_real_event_is_an_event():
    event = _ev("completed", 1.0, req="r", by="m", n=1)
    assert classify(event) is None and parse_line(json.dumps(event).encode()) == (event, None)


def test_the_reader_counts_a_torn_last_line_and_blank_lines(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    good = json.dumps(_ev("submitted", 1.0, req="r", to=1))
    path.write_bytes(f"{good}\n\n{good}\n[1]\n{good[:20]}".encode())
    read = read_history(path)
    assert len(read.events) == 2 and read.lines == 5
    assert read.holes == {"torn_lines": 1, "unreadable_lines": 2, "unknown_kinds": 0, "malformed_events": 0}
