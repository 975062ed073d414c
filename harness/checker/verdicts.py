"""The verdict of a history (Jepsen's pass / fail / unknown) and the evidence rules it rests on
(docs/checker.md, "Evidence rules"): what the history proves, and what keeps it from supporting a pass."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.checker.anomalies import Anomalies, anomalies
from harness.checker.outcomes import completions, duplicated, lost, reexecuted, submitted, takeovers
from harness.history import Event


@dataclass(frozen=True)
class Evidence:
    """What the history's folder says about the history itself (harness.history.record, .manifest, .reading):
    how many requests the run was configured to submit and whether its files are the ones the run sealed.
    `expected_requests` None: not known (a history checked on its own), so the submissions are not checked."""

    expected_requests: int | None = None
    sealed: bool = True  # False: the folder was never sealed (a run that did not close, or a hand-made folder)
    integrity: tuple[str, ...] = ()  # files that differ from the seal (harness.history.manifest.check)


# the one kind of hole that cannot hide a workflow's notice: the capture's dropped packets are bytes on the
# wire, not events; every other hole might have been a `completed` line
CANNOT_HIDE_NOTICES = "capture_drops"


@dataclass
class Verdict:
    """The headline of a history: what a reliability engineer reads first.

    `status` is Jepsen's three-valued answer, with its reasons (docs/checker.md, "Evidence rules"):
    - "fail" when the history proves a failure: a request completed twice (two notices are in it, whatever
      else is missing), two instances drove one request at once, a task's effect was applied twice in one
      request epoch (harness.checker.anomalies), or a submitted request never completed while nothing could
      hide its notice;
    - else "unknown" when the evidence cannot support a pass: an empty history, fewer or more submissions than
      the run was configured for (cut short, or two runs in one folder), holes of any kind (events a service
      could not send, lines that are not events, packets the capture dropped), a loss or a safety anomaly
      that a hole could explain, completions of requests never submitted, task effects before any owner's
      claim, or a folder that is not the one the run sealed;
    - else "pass"."""

    requests: int
    completed: int
    lost: list[str] = field(default_factory=list)
    duplicated: dict[str, int] = field(default_factory=dict)
    reexecuted_tasks: int = 0
    takeovers: int = 0
    holes: dict[str, int] = field(default_factory=dict)
    evidence: Evidence = field(default_factory=Evidence)
    unsubmitted: list[str] = field(default_factory=list)  # completed, never submitted
    anomalies: Anomalies | None = None  # None: the history shows no owner (a black-box target): not observable

    @property
    def ok(self) -> bool:
        found = self.anomalies
        return not self.lost and not self.duplicated and not (found and (found.concurrent or found.double))

    @property
    def doubts(self) -> list[str]:
        """Why the evidence cannot support a pass (empty when it can)."""
        out = list(self.evidence.integrity)
        if not self.evidence.sealed:
            out.append("the run folder was never sealed (no manifest.json): the run did not close")
        if self.requests == 0:
            out.append("empty history: no request was submitted")
        expected = self.evidence.expected_requests
        if expected is not None and self.requests != expected:
            out.append(f"{self.requests} of {expected} configured requests were submitted"
                       + (": the history is cut short" if self.requests < expected
                          else ": more than configured (two runs in one folder?)"))
        for kind, count in sorted(self.holes.items()):
            if count:
                out.append(f"{count} {kind.replace('_', ' ')}")
        if self.unsubmitted:
            out.append(f"{len(self.unsubmitted)} completion(s) of requests never submitted")
        if self.anomalies and self.anomalies.unattributed:
            out.append(f"{self.anomalies.unattributed} task effect(s) before any owner's claim of the request")
        return out

    @property
    def proven(self) -> list[str]:
        """The failures the history proves: duplicates whatever else it lacks; the rest only from a whole history."""
        out = []
        if self.duplicated and not self.evidence.integrity:
            out.append(f"{len(self.duplicated)} request(s) completed more than once")
        hidden = (self.evidence.integrity or not self.evidence.sealed
                  or any(count for kind, count in self.holes.items() if kind != CANNOT_HIDE_NOTICES))
        if not hidden:  # a missing claim could join two stints of one instance into one: proven only whole
            out += self.unsafe
        if self.lost and not hidden:
            out.append(f"{len(self.lost)} submitted request(s) never completed")
        return out

    @property
    def unsafe(self) -> list[str]:
        """The safety anomalies the events show (harness.checker.anomalies): a fail when the history is whole."""
        found, out = self.anomalies, []
        if found and found.concurrent:
            out.append(f"{len(found.concurrent)} request(s) driven by two owners at once")
        if found and found.double:
            out.append(f"{len(found.double)} task(s) applied twice in one request epoch")
        return out

    @property
    def status(self) -> str:
        if self.proven:
            return "fail"
        return "unknown" if self.doubts or not self.ok else "pass"

    @property
    def reason(self) -> str:
        """One line: what the status rests on."""
        if self.proven:
            return "; ".join(self.proven)
        doubts = self.doubts
        if self.lost:  # lost, but a hole could hide the notices
            doubts = [f"{len(self.lost)} request(s) without a completion, which the holes could hide", *doubts]
        doubts = [f"{u}, which a missing event could explain" for u in self.unsafe] + doubts
        return "; ".join(doubts)


def verdict(events: list[Event], holes: dict[str, int] | None = None, evidence: Evidence | None = None) -> Verdict:
    done = completions(events)
    redo = reexecuted(events)
    sub = submitted(events)
    return Verdict(
        requests=len(sub),
        completed=sum(1 for r in done if r in sub),
        lost=lost(events),
        duplicated=duplicated(events),
        reexecuted_tasks=sum(count - 1 for count in redo.values()),
        takeovers=len(takeovers(events)),
        holes=dict(holes or {}),
        evidence=evidence or Evidence(),
        unsubmitted=sorted(r for r in done if r not in sub),
        anomalies=anomalies(events),
    )
