"""The checker's safety anomalies (harness/checker/anomalies.py, issue 22) on hand-built histories, both ways:
two owners driving one request at once (`concurrent_owners`) and a task's effect applied twice in one request
epoch (`double_effects`); present and absent, centralised and distributed, with and without the fenced
mechanism's `epoch` stamps, and `n/a` (never 0) where the history shows no owner at all."""

from __future__ import annotations

from harness import checker
from harness.cli.progress import verdict_line
from harness.measure import summary
from tests.test_figures_pure import record

REQ = "r1"


def ev(t: float, svc: str, kind: str, **fields: object) -> dict:
    return {"t": t, "wall": t, "svc": svc, "kind": kind, **fields}


def task(t: float, slm: str, i: int, worker: str, epoch: int | None = None) -> list[dict]:
    """One task of REQ driven by `slm`: the call, the worker's work (its effect at t + 0.3), the reply."""
    stamp = {} if epoch is None else {"epoch": epoch}
    return [ev(t, slm, "task_call", req=REQ, task=i, name="x", worker=worker, attempt=0, **stamp),
            ev(t + 0.05, worker, "task_start", req=REQ, task=i, name="x", **stamp),
            ev(t + 0.3, worker, "task_end", req=REQ, task=i, name="x", **stamp),
            ev(t + 0.35, slm, "task_reply", req=REQ, task=i, name="x", worker=worker, bytes_out=1, bytes_in=1)]


def share(t: float, slm: str, i: int, peer: str) -> list[dict]:
    """A state share of REQ after task i that the peer stored."""
    return [ev(t, peer, "state_share_received", req=REQ, task=i, owner=slm, bytes=1),
            ev(t + 0.01, slm, "state_share_sent", req=REQ, task=i, peer=peer, bytes=1)]


def complete(t: float, slm: str, **fields: object) -> list[dict]:
    return [ev(t, slm, "request_completed", req=REQ, **fields), ev(t + 0.01, "bss", "completed", req=REQ, by=slm, n=1)]


def start() -> list[dict]:
    """REQ submitted; slm-a owns it by rank, slm-b logs it."""
    return [ev(0.0, "bss", "submitted", req=REQ, to=2),
            ev(0.01, "slm-a", "request_received", req=REQ, owner="slm-a", bytes=1),
            ev(0.01, "slm-b", "request_received", req=REQ, owner="slm-a", bytes=1),
            ev(0.02, "slm-b", "request_logged", req=REQ, owner="slm-a")]


def takeover(t: float, slm: str, dead: str, from_task: int, **fields: object) -> list[dict]:
    return [ev(t - 0.01, slm, "peer_dead", peer=dead, silent_for=1.0),
            ev(t, slm, "takeover", req=REQ, dead=dead, from_task=from_task, **fields)]


def crash_history() -> list[dict]:
    """slm-a does task 1 and shares it, calls task 2 and is killed while m2 works on it (m2 finishes after the
    kill); slm-b declares it dead 1.5 s later, takes over from task 2 and finishes."""
    return sorted([*start(), *task(0.1, "slm-a", 1, "m1"), *share(0.5, "slm-a", 1, "slm-b"),
                   ev(0.6, "slm-a", "task_call", req=REQ, task=2, name="x", worker="m2", attempt=0),
                   ev(0.65, "m2", "task_start", req=REQ, task=2, name="x"),
                   ev(0.7, "harness", "fault", fault="slm-crash", action="kill", target="slm-a"),
                   ev(0.9, "m2", "task_end", req=REQ, task=2, name="x"),
                   *takeover(2.2, "slm-b", "slm-a", 2, last_shared=1),
                   *task(2.3, "slm-b", 2, "m2"), *task(2.7, "slm-b", 3, "m3"), *complete(3.1, "slm-b")],
                  key=lambda e: e["t"])


def pause_history() -> list[dict]:
    """slm-a does tasks 1-2 (shares 1) and is frozen while m3 works on its task 3; slm-b takes over from task 2;
    slm-a wakes at 4.0 to m3's reply, and both complete REQ."""
    return sorted([*start(), *task(0.1, "slm-a", 1, "m1"), *share(0.5, "slm-a", 1, "slm-b"),
                   *task(0.6, "slm-a", 2, "m2"),
                   ev(1.0, "slm-a", "task_call", req=REQ, task=3, name="x", worker="m3", attempt=0),
                   ev(1.05, "m3", "task_start", req=REQ, task=3, name="x"),
                   ev(1.1, "harness", "fault", fault="slm-pause", action="pause", target="slm-a"),
                   ev(1.3, "m3", "task_end", req=REQ, task=3, name="x"),
                   *takeover(2.2, "slm-b", "slm-a", 2, last_shared=1),
                   *task(2.3, "slm-b", 2, "m2"), *task(2.7, "slm-b", 3, "m3"), *complete(3.1, "slm-b"),
                   ev(4.0, "harness", "fault", fault="slm-pause", action="resume", target="slm-a"),
                   ev(4.01, "slm-a", "task_reply", req=REQ, task=3, name="x", worker="m3", bytes_out=1, bytes_in=1),
                   *complete(4.1, "slm-a")],
                  key=lambda e: e["t"])


def test_a_clean_takeover_after_a_crash_is_no_anomaly_and_its_redo_is_a_reexecution():
    events = crash_history()
    found = checker.anomalies(events)
    assert found is not None and (found.concurrent, found.double, found.unattributed) == ({}, {}, 0)
    v = checker.verdict(events)
    assert v.reexecuted_tasks == 1, "task 2 ran twice: once for the victim (finished after the kill), once after"
    assert (v.status, v.reason) == ("pass", "")
    stints = {s.svc: s for s in checker.stints(events)}
    assert stints["slm-a"].end < stints["slm-b"].start, "the victim's last act came before the survivor's claim"


def test_a_paused_owner_that_wakes_beside_the_taker_is_a_concurrent_owner_and_its_work_a_double_effect():
    events = pause_history()
    found = checker.anomalies(events)
    assert found is not None and list(found.concurrent) == [REQ]
    ((a, b),) = found.concurrent[REQ]
    assert {a.svc, b.svc} == {"slm-a", "slm-b"} and a.start < b.start < a.end, "slm-a held REQ across its pause"
    assert found.double == {(REQ, 2): 2, (REQ, 3): 2}, "both owners' work fell in one epoch"
    v = checker.verdict(events)
    assert v.status == "fail"
    assert v.reason == ("1 request(s) completed more than once; 1 request(s) driven by two owners at once; "
                        "2 task(s) applied twice in one request epoch")
    row = summary.derive(record(events)).summary
    assert (row["duplicated"], row["concurrent_owners"], row["double_effects"]) == (1, 1, 2)
    line = verdict_line(v, {"false_suspicions": 0, "link_backend": "proxy"})
    assert "duplicated 1, concurrent owners 1, double effects 2, tasks re-run" in line, line


def test_a_task_applied_twice_by_one_owner_is_a_double_effect_without_a_concurrent_owner():
    """m2a did task 2 but its reply was lost; slm-a retried on m2b, which did it again: one epoch, two effects."""
    events = sorted([*start(), *task(0.1, "slm-a", 1, "m1"),
                     ev(0.5, "slm-a", "task_call", req=REQ, task=2, name="x", worker="m2a", attempt=0),
                     ev(0.55, "m2a", "task_start", req=REQ, task=2, name="x"),
                     ev(0.8, "m2a", "task_end", req=REQ, task=2, name="x"),
                     ev(1.5, "slm-a", "task_call_failed", req=REQ, task=2, worker="m2a", error="TimeoutError"),
                     *task(1.6, "slm-a", 2, "m2b"), *complete(2.0, "slm-a")], key=lambda e: e["t"])
    found = checker.anomalies(events)
    assert found is not None and found.concurrent == {} and found.double == {(REQ, 2): 2}
    v = checker.verdict(events)
    assert (v.status, v.reason) == ("fail", "1 task(s) applied twice in one request epoch")
    assert not checker.verdict(crash_history()).anomalies.double  # type: ignore[union-attr]


def work(t0: float, t1: float, module: str, i: int) -> list[dict]:
    """A module's task i of REQ, from t0 to t1 (its effect at t1)."""
    return [ev(t0, module, "task_start", req=REQ, task=i, name="x"),
            ev(t1, module, "task_end", req=REQ, task=i, name="x")]


def module_history(paused: bool) -> list[dict]:
    """Distributed, hop 2 of REQ: m2a owns it, starts its task; crashed (no effect, then nothing) or paused
    (it wakes after its twin m2b took over and finished the hop, ends the task and forwards too)."""
    hop = [ev(0.0, "bss", "submitted", req=REQ, to=2),
           ev(0.1, "m1a", "request_received", req=REQ, task=1, owner="m1a", bytes=1),
           ev(0.1, "m1b", "request_received", req=REQ, task=1, owner="m1a", bytes=1),
           *work(0.11, 0.4, "m1a", 1),
           ev(0.45, "m2a", "request_received", req=REQ, task=2, owner="m2a", bytes=1),
           ev(0.45, "m2b", "request_received", req=REQ, task=2, owner="m2a", bytes=1),
           ev(0.46, "m2b", "request_logged", req=REQ, task=2, owner="m2a"),
           ev(0.5, "m1a", "forward_sent", req=REQ, task=1, to="m2", bytes=1),
           ev(0.55, "m2a", "task_start", req=REQ, task=2, name="x"),
           ev(0.6, "harness", "fault", fault="slm-pause" if paused else "slm-crash",
              action="pause" if paused else "kill", target="m2a"),
           ev(2.0, "m2b", "takeover", req=REQ, task=2, dead="m2a", from_task=2),
           *work(2.01, 2.3, "m2b", 2),
           ev(2.35, "m2b", "forward_sent", req=REQ, task=2, to="m3", bytes=1),
           ev(2.4, "m3a", "request_received", req=REQ, task=3, owner="m3a", bytes=1),
           *work(2.41, 2.7, "m3a", 3),
           *complete(2.75, "m3a", task=3)]
    if paused:
        hop += [ev(4.0, "harness", "fault", fault="slm-pause", action="resume", target="m2a"),
                ev(4.01, "m2a", "task_end", req=REQ, task=2, name="x"),
                ev(4.02, "m3a", "request_duplicate", req=REQ, task=3),
                ev(4.03, "m2a", "forward_sent", req=REQ, task=2, to="m3", bytes=1)]
    return sorted(hop, key=lambda e: e["t"])


def test_distributed_a_crashed_twin_is_no_anomaly_a_paused_one_is_both_though_the_bss_saw_one_completion():
    crashed = checker.verdict(module_history(paused=False))
    assert crashed.anomalies is not None and (crashed.anomalies.concurrent, crashed.anomalies.double) == ({}, {})
    assert crashed.status == "pass"
    paused = checker.verdict(module_history(paused=True))
    assert paused.duplicated == {}, "the next module dropped the second hop: the BSS saw one completion"
    found = paused.anomalies
    assert found is not None and list(found.concurrent) == [REQ] and found.double == {(REQ, 2): 2}
    ((a, b),) = found.concurrent[REQ]
    assert (a.hop, b.hop) == (2, 2), "the hops are told apart: m1a and m3a drove other hops of REQ"
    assert (paused.status, paused.reexecuted_tasks) == ("fail", 1)


def test_distributed_a_twin_killed_after_its_effect_is_redone_in_a_new_epoch():
    """m2a ended its task and was killed before forwarding: m2b redoes it after the takeover, legitimately."""
    events = [e for e in module_history(paused=False) if e["kind"] != "fault"]
    events += [ev(0.58, "m2a", "task_end", req=REQ, task=2, name="x"),
               ev(0.6, "harness", "fault", fault="slm-crash", action="kill", target="m2a")]
    events.sort(key=lambda e: e["t"])
    v = checker.verdict(events)
    assert v.anomalies is not None and (v.anomalies.concurrent, v.anomalies.double) == ({}, {})
    assert (v.status, v.reexecuted_tasks) == ("pass", 1)


def fenced_history(stale_effect: bool) -> list[dict]:
    """The fenced mechanism: the paused slm-a wakes, its call under the stale epoch 1 is refused (no reply) and it
    steps down; slm-b drives epoch 2 (slm-a's notice the BSS did not count, `already`, is no act). With
    `stale_effect`, a worker applied a stale call of epoch 1 once more anyway."""
    events = [*start(), *task(0.1, "slm-a", 1, "m1", epoch=1), *task(0.6, "slm-a", 2, "m2", epoch=1),
              ev(1.1, "harness", "fault", fault="slm-pause", action="pause", target="slm-a"),
              *takeover(2.2, "slm-b", "slm-a", 1, epoch=2),
              *task(2.3, "slm-b", 1, "m1", epoch=2), *task(2.7, "slm-b", 2, "m2", epoch=2), *complete(3.1, "slm-b"),
              ev(4.0, "harness", "fault", fault="slm-pause", action="resume", target="slm-a"),
              ev(4.01, "slm-a", "task_call", req=REQ, task=3, name="x", worker="m3", attempt=0, epoch=1),
              ev(4.02, "m3", "task_fenced", req=REQ, task=3, epoch=1, seen=2),
              ev(4.03, "slm-a", "stepped_down", req=REQ, epoch=1, newer=2, owner=""),
              ev(4.5, "slm-a", "request_completed", req=REQ, epoch=1, already=True)]
    if stale_effect:
        events += [ev(4.1, "m2", "task_start", req=REQ, task=2, name="x", epoch=1),
                   ev(4.3, "m2", "task_end", req=REQ, task=2, name="x", epoch=1)]
    return sorted(events, key=lambda e: e["t"])


def test_fenced_epoch_stamps_decide_what_is_one_epoch():
    clean = checker.verdict(fenced_history(stale_effect=False))
    assert clean.anomalies is not None and (clean.anomalies.concurrent, clean.anomalies.double) == ({}, {})
    assert clean.status == "pass", "a refused stale call drove nothing: no second owner, nothing applied twice"
    assert clean.reexecuted_tasks == 2
    stale = checker.verdict(fenced_history(stale_effect=True))
    assert stale.anomalies is not None and stale.anomalies.double == {(REQ, 2): 2}, "epoch 1's task 2 applied twice"
    assert stale.anomalies.concurrent == {} and stale.status == "fail"


def test_a_share_the_peer_did_not_store_drives_nothing():
    """A woken owner whose only act is a share the taker ignored (state_share_stale) is no second owner."""
    events = sorted([*crash_history()[:-1], ev(4.0, "slm-b", "state_share_stale", req=REQ, task=1, owner="slm-a"),
                     ev(4.01, "slm-a", "state_share_sent", req=REQ, task=1, peer="slm-b", bytes=1),
                     crash_history()[-1]], key=lambda e: e["t"])
    assert checker.anomalies(events).concurrent == {}  # type: ignore[union-attr]
    stored = sorted([*events, ev(4.0, "slm-b", "state_share_received", req=REQ, task=1, owner="slm-a", bytes=1)],
                    key=lambda e: e["t"])
    assert list(checker.anomalies(stored).concurrent) == [REQ]  # type: ignore[union-attr]


def test_a_share_acts_when_the_peer_stores_it_not_when_its_answer_gets_back():
    """A share slm-a sent before a freeze of the bus, stored by slm-b before slm-b's takeover but acknowledged
    to slm-a only after it (seen in a fenced broker-pause run): slm-a drove nothing beside slm-b. The same share
    stored after the takeover is an act beside it."""
    before = [*start(), *task(0.1, "slm-a", 1, "m1"),
              ev(2.15, "slm-b", "state_share_received", req=REQ, task=1, owner="slm-a", bytes=1),
              *takeover(2.2, "slm-b", "slm-a", 2, last_shared=1),
              ev(2.25, "slm-a", "state_share_sent", req=REQ, task=1, peer="slm-b", bytes=1),
              *task(2.3, "slm-b", 2, "m2"), *task(2.7, "slm-b", 3, "m3"), *complete(3.1, "slm-b")]
    assert checker.anomalies(sorted(before, key=lambda e: e["t"])).concurrent == {}  # type: ignore[union-attr]
    after = [e if e["kind"] != "state_share_received" else {**e, "t": 2.22} for e in before]
    assert list(checker.anomalies(sorted(after, key=lambda e: e["t"])).concurrent) == [REQ]  # type: ignore[union-attr]


def test_without_any_owner_in_the_history_the_anomalies_are_not_observable_never_zero():
    """A black-box target's history: the client's events only. n/a in summary.csv and the verdict line."""
    events = [ev(0.0, "bss", "submitted", req=REQ, to=1), ev(1.0, "bss", "completed", req=REQ, by="x", n=1)]
    assert checker.anomalies(events) is None
    v = checker.verdict(events)
    assert v.anomalies is None and v.status == "pass", "what the client saw decides, as before"
    assert checker.anomaly_columns(None) == {"concurrent_owners": "n/a", "double_effects": "n/a"}
    row = summary.derive(record(events)).summary
    assert (row["concurrent_owners"], row["double_effects"]) == ("n/a", "n/a")
    assert list(row) == summary.SUMMARY_COLUMNS
    line = verdict_line(v, {"false_suspicions": 0, "link_backend": "proxy"})
    assert "duplicated 0, concurrent owners n/a, double effects n/a" in line, line


def test_anomalies_a_hole_could_explain_are_unknown_not_fail_and_an_effect_without_a_claim_is_a_doubt():
    v = checker.verdict([e for e in pause_history() if e["svc"] != "bss" or e["kind"] != "completed"]
                        + [ev(9.0, "bss", "completed", req=REQ, by="slm-b", n=1)], holes={"events_lost": 1})
    assert v.status == "unknown"
    assert v.reason.startswith("1 request(s) driven by two owners at once, which a missing event could explain; "
                               "2 task(s) applied twice in one request epoch, which a missing event could explain")
    orphan = [*crash_history(), ev(5.0, "m9", "task_start", req="r2", task=1, name="x"),
              ev(5.1, "m9", "task_end", req="r2", task=1, name="x")]
    w = checker.verdict(orphan)
    assert w.anomalies is not None and w.anomalies.unattributed == 1 and w.anomalies.double == {}
    assert w.status == "unknown" and "1 task effect(s) before any owner's claim of the request" in w.reason


def test_a_claim_with_no_act_after_it_drove_nothing():
    """Fenced: a request reaches a paused owner that ranks first for it; the others elected slm-b meanwhile.
    slm-a wakes, records its claim (`request_received` naming itself), confirms its epoch, learns of the later
    one and steps down before any act: no second owner. Had it done a task after the claim, it would be one."""
    stepped = [*takeover(2.2, "slm-b", "slm-a", 1, epoch=2), *task(2.3, "slm-b", 1, "m1", epoch=2),
               ev(2.5, "slm-a", "request_received", req=REQ, owner="slm-a", bytes=1, epoch=1),
               ev(2.6, "slm-a", "stepped_down", req=REQ, epoch=1, newer=2, owner="slm-b"),
               *task(2.7, "slm-b", 2, "m2", epoch=2), *complete(3.1, "slm-b", epoch=2)]
    found = checker.anomalies(sorted(stepped, key=lambda e: e["t"]))
    assert found is not None and found.concurrent == {}
    acted = [*stepped, *task(2.55, "slm-a", 3, "m3", epoch=1)]
    assert list(checker.anomalies(sorted(acted, key=lambda e: e["t"])).concurrent) == [REQ]  # type: ignore[union-attr]
