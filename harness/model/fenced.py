"""What the fenced mechanism adds to Eqs 2-4: this project's extension, not Soenen et al.'s (docs/fencing.md).

`mechanism: fenced` (targets/fencing.py) shares state like the paper's mechanism, so Eqs 2-4 stand, and adds:

- t_c: each request's first step checks its epoch with a majority, one round trip on the state link
  (2 l_hb), run while the owner spends its first t_o: only what exceeds t_o shows, max(0, 2 l_hb - t_o).
  The owner's lease rides on the heartbeats' acknowledgements: no message of its own while nothing fails.
- t_l: after the detection (l_hb + t_h, Eq 3) the survivor that ranks first asks the others for the next
  epoch, one round trip (2 l_hb), before it resumes: t_l + 2 l_hb.
- B_rel: the epoch check's asks, k - 1 messages of h_s per workflow ((k - 1) h_s / t_c); the answers are
  unpadded acknowledgements, like the heartbeats' which Eq 4 does not count either. A takeover adds k - 1
  more, a fault's, not the steady state's.
- the wait without a majority (the minority side of a partition, more than k - majority(k) SLMs down, the
  broker gone): nobody decides until a majority answers again, then one vote round: `no_majority_wait`.
  Not in t_r, which Eq 1 defines for one crash; a run measures it.

No term has a parameter of its own: l_hb, t_o, h_s and k are the paper's, so `harness fit` fits the fenced
model with the fit it already makes (link latency, header bytes).
"""

from __future__ import annotations

from harness.plan.config import Experiment


def vote_round(z: Experiment) -> float:
    """One ask and its answer on the state link between two SLMs (latency l_hb each way)."""
    return 2 * z.l_hb


def t_c_added(z: Experiment) -> float:
    """The first step's epoch check, beyond the t_o it runs beside."""
    return max(0.0, vote_round(z) - z.t_o)


def t_l_added(z: Experiment) -> float:
    """The election between the detection and the resumption."""
    return vote_round(z)


def b_rel_added(z: Experiment, t_c: float) -> float:
    """The epoch check's asks per workflow, as bandwidth (kB/s)."""
    return (z.k - 1) * z.h_s / t_c


def no_majority_wait(z: Experiment, outage: float) -> float:
    """A request whose owner cannot be decided for `outage` seconds waits that long and one vote round more."""
    return outage + vote_round(z)


# --- the distributed design: each hop's twins and the chain's witness (targets/witness.py) ---------------------
def distributed_t_c_added(z: Experiment) -> float:
    """Each hop's owner confirms its epoch before it starts the task, one round trip; no t_o to hide it in."""
    return z.n * vote_round(z)


def distributed_b_rel_added(z: Experiment, t_c: float) -> float:
    """Every module's heartbeats to the witness (2n streams of h_s at h_r) and each hop's epoch check, two
    asks of h_s (the twin, the witness) per hop and workflow, as bandwidth (kB/s)."""
    return 2 * z.n * z.h_s * z.h_r + 2 * z.n * z.h_s / t_c


WITNESSES = 1  # the distributed design's extra instance under fencing: Q_r + 1
