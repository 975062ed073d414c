"""harness.model against Eqs 1-10 of Soenen et al., every expected value worked out by hand below.

Each case writes out the paper's arithmetic for t_m, t_c (Eq 2 / Eq 6), t_l (Eq 3 / Eq 7), B_op (Eq 5 / Eq 9),
B_rel (Eq 4 / Eq 8) and Q_r; t_r, R_a, R_r and B_tot follow from Eq 1 in `_with_eq1`. Nothing here calls a
helper of harness.model: only `evaluate` (in process) or `harness model` (as a subprocess) produce the values
under test. Every parameter the equations read is given explicitly, so a change of a default in
harness/plan/config.py cannot move these numbers. docs/model.md explains the corrected and literal readings.
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import model
from harness.analysis import optimise
from harness.plan import config

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["design", "mechanism", "t_m", "t_c", "t_l", "t_r", "R_a", "R_r", "B_op", "B_rel", "B_tot", "Q_r"]
NUMBERS = COLUMNS[2:]

# Every parameter of Eqs 2-9, set explicitly (paper units: s, kB, kB/s).
BASE: dict[str, Any] = {
    "t_o": 0.15, "l_a": 0.05, "l_b": 0.05, "l": 0.05, "l_hb": 0.05, "h_r": 2.0, "t_h": 1.5,
    "s_p": 1, "s_o": 1, "h_s": 0.1, "h_m": 0.0, "s_z": 200.0, "P_a": 50.0, "P_b": 50.0, "P": 200.0,
    "p_c": 0.1, "k": 2, "mechanism": "state-sharing", "model_reading": "corrected",
}


def _with_eq1(t_m: float, t_c: float, t_l: float, b_op: float, b_rel: float, q_r: float) -> dict[str, float]:
    """Eq 1 and section V-A: t_r = t_c + t_l, R_a = t_c / t_m, R_r = t_r / t_c, B_tot = B_op + B_rel."""
    t_r = t_c + t_l
    return {"t_m": t_m, "t_c": t_c, "t_l": t_l, "t_r": t_r, "R_a": t_c / t_m, "R_r": t_r / t_c,
            "B_op": b_op, "B_rel": b_rel, "B_tot": b_op + b_rel, "Q_r": q_r}


# --- centralised: Eqs 2-5 -------------------------------------------------------------------------------


def _c_uniform() -> tuple[dict, dict]:
    """n = 10 equal tasks, s_p = 1, s_o = 1: shares after tasks 1..9, the worst loss is one task."""
    z = {"n": 10, "t_i": 5}
    t_c = 10 * 5 + (10 + 1) * 0.15 + 10 * (0.05 + 0.05)  # Eq 2
    t_l = 0.05 + 1.5 + (5 + 0.05 + 0.05 + 0.15)  # Eq 3: l_hb + t_h + one task
    b_op = 10 * (50 + 50) / t_c  # Eq 5
    b_rel = 0.0 + 2 * 1 * 0.1 * 2.0 + 1 * (200 * 9 + 0.1) / t_c  # k(k-1) h_s h_r + (k-1)(9 s_z + p_c) / t_c
    return z, _with_eq1(50.0, t_c, t_l, b_op, b_rel, 10 + 2 - 1)


C2_TASKS = {
    "n": 6,
    "t_i": [1, 7, 3, 12, 2, 4],
    "l_a": [0.01, 0.2, 0.05, 0.1, 0.02, 0.03],
    "l_b": [0.02, 0.01, 0.2, 0.05, 0.1, 0.04],
    "P_a": [10, 300, 50, 20, 100, 40],
    "P_b": [30, 10, 200, 60, 15, 5],
    "l_hb": 0.1,
    "t_h": 2.0,
}
# t_c of C2_TASKS by Eq 2: sum t_i + (n + 1) t_o + sum l_a + sum l_b
C2_T_C = (1 + 7 + 3 + 12 + 2 + 4) + 7 * 0.15 + (0.01 + 0.2 + 0.05 + 0.1 + 0.02 + 0.03) + (
    0.02 + 0.01 + 0.2 + 0.05 + 0.1 + 0.04
)
C2_B_OP = ((10 + 300 + 50 + 20 + 100 + 40) + (30 + 10 + 200 + 60 + 15 + 5)) / C2_T_C


def _c_nonuniform_sp2() -> tuple[dict, dict]:
    """Non-uniform t_i, l_a, l_b, P_a, P_b; s_p = 2, s_o = 1: shares after 1, 3, 5."""
    z = {**C2_TASKS, "s_p": 2, "s_o": 1}
    # runs {1} {2,3} {4,5} {6}; the worst is {4,5}
    lost = (12 + 0.1 + 0.05 + 0.15) + (2 + 0.02 + 0.1 + 0.15)
    t_l = 0.1 + 2.0 + lost
    b_rel = 2 * 1 * 0.1 * 2.0 + (200 * 3 + 0.1) / C2_T_C
    return z, _with_eq1(29.0, C2_T_C, t_l, C2_B_OP, b_rel, 7)


def _c_nonuniform_so3() -> tuple[dict, dict]:
    """The same tasks with s_p = 2, s_o = 3: shares after 3 and 5."""
    z = {**C2_TASKS, "s_p": 2, "s_o": 3}
    # runs {1,2,3} = 11.94, {4,5} = 14.57, {6} = 4.22
    lost = (12 + 0.1 + 0.05 + 0.15) + (2 + 0.02 + 0.1 + 0.15)
    t_l = 0.1 + 2.0 + lost
    b_rel = 2 * 1 * 0.1 * 2.0 + (200 * 2 + 0.1) / C2_T_C
    return z, _with_eq1(29.0, C2_T_C, t_l, C2_B_OP, b_rel, 7)


def _c_so_equals_n() -> tuple[dict, dict]:
    """s_o = n: no share point before the end, so a crash loses every task; only the 'done' is sent."""
    z = {"n": 5, "s_o": 5, "s_p": 1, "t_i": [2, 4, 6, 8, 10], "h_r": 1.0, "t_h": 3.0, "s_z": 150.0}
    t_c = 30 + 6 * 0.15 + 5 * (0.05 + 0.05)
    lost = (2 + 4 + 6 + 8 + 10) + 5 * (0.05 + 0.05 + 0.15)
    t_l = 0.05 + 3.0 + lost
    b_rel = 2 * 1 * 0.1 * 1.0 + (150 * 0 + 0.1) / t_c
    return z, _with_eq1(30.0, t_c, t_l, 5 * 100 / t_c, b_rel, 6)


def _c_sp_beyond_n_minus_so() -> tuple[dict, dict]:
    """s_p = 5 > n - s_o = 4: one share (after task 2); the long run {3..6} holds the slow task."""
    z = {"n": 6, "s_o": 2, "s_p": 5, "t_i": [4, 1, 1, 1, 1, 9], "h_r": 0.5, "t_h_mult": 5}
    t_c = 17 + 7 * 0.15 + 6 * 0.1
    # runs {1,2} = 4 + 1 + 2 * 0.25 = 5.5 and {3,4,5,6} = 12 + 4 * 0.25 = 13
    lost = (1 + 1 + 1 + 9) + 4 * (0.05 + 0.05 + 0.15)
    t_l = 0.05 + 5 / 0.5 + lost  # t_h = t_h_mult / h_r = 10 s
    b_rel = 2 * 1 * 0.1 * 0.5 + (200 * 1 + 0.1) / t_c
    return z, _with_eq1(17.0, t_c, t_l, 600 / t_c, b_rel, 7)


def _c_three_slms() -> tuple[dict, dict]:
    """k = 3 SLMs, s_o = 2, h_m > 0: 3 * 2 heartbeat streams, two copies of each share and of the 'done'."""
    z = {"n": 4, "k": 3, "s_p": 1, "s_o": 2, "t_i": [10, 20, 5, 25], "h_r": 1.0, "t_h_mult": 4,
         "h_m": 0.3, "h_s": 0.2, "s_z": 400.0, "p_c": 0.5}
    t_c = 60 + 5 * 0.15 + 4 * 0.1
    # shares after 2 and 3: runs {1,2} = 30.5, {3} = 5.25, {4} = 25.25
    lost = (10 + 0.25) + (20 + 0.25)
    t_l = 0.05 + 4.0 + lost
    b_rel = 0.3 + 3 * 2 * 0.2 * 1.0 + 2 * (400 * 2 + 0.5) / t_c
    return z, _with_eq1(60.0, t_c, t_l, 400 / t_c, b_rel, 4 + 3 - 1)


def _c_sp3_from_t_m() -> tuple[dict, dict]:
    """t_m = 40 split over n = 8 (t_i = 5), s_p = 3, s_o = 1: shares after 1, 4, 7; worst run 3 tasks."""
    z = {"n": 8, "t_m": 40.0, "s_p": 3, "s_o": 1}
    t_c = 40 + 9 * 0.15 + 8 * 0.1
    t_l = 0.05 + 1.5 + 3 * (5 + 0.05 + 0.05 + 0.15)
    b_rel = 2 * 0.1 * 2.0 + (200 * 3 + 0.1) / t_c
    return z, _with_eq1(40.0, t_c, t_l, 800 / t_c, b_rel, 9)


def _c_restart() -> tuple[dict, dict]:
    """Restart (no state sharing): the survivor redoes all n tasks; only heartbeats and the 'done' remain."""
    z = {"n": 5, "mechanism": "restart", "t_i": [3, 1, 4, 1, 5], "l_a": [0.01, 0.02, 0.03, 0.04, 0.05],
         "l_b": 0.1}
    t_c = 14 + 6 * 0.15 + (0.01 + 0.02 + 0.03 + 0.04 + 0.05) + 5 * 0.1
    lost = 14 + (0.01 + 0.02 + 0.03 + 0.04 + 0.05) + 5 * 0.1 + 5 * 0.15
    t_l = 0.05 + 1.5 + lost
    b_rel = 2 * 1 * 0.1 * 2.0 + 0.1 / t_c
    return z, _with_eq1(14.0, t_c, t_l, 500 / t_c, b_rel, 6)


def _c_restart_four_slms() -> tuple[dict, dict]:
    """Restart with k = 4: 4 * 3 heartbeat streams, a 'done' to 3 peers, Q_r = n + 3."""
    z = {"n": 3, "k": 4, "mechanism": "restart", "t_i": 2}
    t_c = 6 + 4 * 0.15 + 3 * 0.1
    t_l = 0.05 + 1.5 + 3 * (2 + 0.05 + 0.05 + 0.15)
    b_rel = 4 * 3 * 0.1 * 2.0 + 3 * 0.1 / t_c
    return z, _with_eq1(6.0, t_c, t_l, 300 / t_c, b_rel, 3 + 4 - 1)


# --- centralised, literal reading: Eq 3 and Eq 4 as printed ---------------------------------------------


def _lit_nonuniform() -> tuple[dict, dict]:
    """Eq 3 literal, s_p = 2: max over j in [2, 6] of sum_{k = max(1, j - 3)}^{j}; Eq 4 as printed."""
    z = {**C2_TASKS, "s_p": 2, "s_o": 3, "model_reading": "literal"}
    c1 = 1 + 0.01 + 0.02 + 0.15
    c2 = 7 + 0.2 + 0.01 + 0.15
    c3 = 3 + 0.05 + 0.2 + 0.15
    c4 = 12 + 0.1 + 0.05 + 0.15
    c5 = 2 + 0.02 + 0.1 + 0.15
    c6 = 4 + 0.03 + 0.04 + 0.15
    windows = [c1 + c2, c1 + c2 + c3, c1 + c2 + c3 + c4, c2 + c3 + c4 + c5, c3 + c4 + c5 + c6]  # j = 2..6
    assert max(windows) == windows[3]  # j = 5: tasks 2..5
    t_l = 0.1 + 2.0 + windows[3]
    b_rel = 0.0 + 0.1 * 2.0 + 200 / C2_T_C * (1 + 1)  # h_m + h_s h_r + s_z / t_c (1 + trunc(3 / 2))
    return z, _with_eq1(29.0, C2_T_C, t_l, C2_B_OP, b_rel, 7)


def _lit_sp1_three_slms() -> tuple[dict, dict]:
    """Eq 3 literal with s_p = 1 sums three tasks (k = j - 2 .. j); Eq 4 literal ignores k."""
    z = {"n": 4, "k": 3, "s_p": 1, "s_o": 2, "t_i": [10, 20, 5, 25], "h_r": 1.0, "t_h": 4.0,
         "h_m": 0.3, "h_s": 0.2, "s_z": 400.0, "p_c": 0.5, "model_reading": "literal"}
    t_c = 60 + 5 * 0.15 + 4 * 0.1
    # j = 1: {1} 10.25; j = 2: {1,2} 30.5; j = 3: {1,2,3} 35.75; j = 4: {2,3,4} 50.75
    t_l = 0.05 + 4.0 + (20.25 + 5.25 + 25.25)
    b_rel = 0.3 + 0.2 * 1.0 + 400 / t_c * (1 + 2)  # 1 + trunc((4 - 2) / 1)
    return z, _with_eq1(60.0, t_c, t_l, 400 / t_c, b_rel, 6)


def _lit_sp_beyond_n() -> tuple[dict, dict]:
    """Eq 3 literal with s_p > n: [s_p, n] is empty, taken as j = n (every task lost), as at s_p = n."""
    z = {"n": 3, "s_p": 5, "s_o": 1, "t_i": [2, 3, 4], "model_reading": "literal"}
    t_c = 9 + 4 * 0.15 + 3 * 0.1
    t_l = 0.05 + 1.5 + 9 + 3 * 0.25
    b_rel = 0.1 * 2.0 + 200 / t_c * (1 + 0)  # trunc(2 / 5) = 0
    return z, _with_eq1(9.0, t_c, t_l, 300 / t_c, b_rel, 4)


def _lit_so_equals_n() -> tuple[dict, dict]:
    """Eq 3 literal ignores s_o: s_o = n = 4, s_p = 2, window for j = 4 is k = 1..4."""
    z = {"n": 4, "s_o": 4, "s_p": 2, "t_i": [1, 2, 3, 4], "model_reading": "literal"}
    t_c = 10 + 5 * 0.15 + 4 * 0.1
    t_l = 0.05 + 1.5 + 10 + 4 * 0.25
    b_rel = 0.1 * 2.0 + 200 / t_c * (1 + 0)
    return z, _with_eq1(10.0, t_c, t_l, 400 / t_c, b_rel, 5)


def _lit_restart() -> tuple[dict, dict]:
    """Literal reading with restart: every task lost, no share term in Eq 4."""
    z = {"n": 5, "t_i": 2, "mechanism": "restart", "model_reading": "literal"}
    t_c = 10 + 6 * 0.15 + 5 * 0.1
    t_l = 0.05 + 1.5 + 5 * (2 + 0.25)
    return z, _with_eq1(10.0, t_c, t_l, 500 / t_c, 0.1 * 2.0, 6)


# --- distributed: Eqs 6-9 -------------------------------------------------------------------------------


def _d_uniform() -> tuple[dict, dict]:
    """n = 10 equal modules: 2n heartbeat streams, the state twice on every hop, n 'done' messages."""
    z = {"n": 10, "t_i": 5}
    t_c = 10 * 5 + 10 * 0.05  # Eq 6: hops 0..9
    t_l = 0.05 + 1.5 + 5  # Eq 7
    b_op = 10 * 200 / t_c  # Eq 9
    b_rel = 2 * 10 * 0.1 * 2.0 + (10 * 200 + 10 * 0.1) / t_c  # Eq 8, both twins heartbeat each other
    return z, _with_eq1(50.0, t_c, t_l, b_op, b_rel, 2 * 10 - 1)


D2_TASKS = {"n": 5, "t_i": [3, 9, 1, 4, 2], "l": [0.2, 0.01, 0.1, 0.05, 0.15],
            "P": [100, 300, 250, 120, 400], "l_hb": 0.02, "h_r": 1.0, "t_h": 3.0}
D2_T_C = (3 + 9 + 1 + 4 + 2) + (0.2 + 0.01 + 0.1 + 0.05 + 0.15)
D2_STATE = 100 + 300 + 250 + 120 + 400


def _d_nonuniform() -> tuple[dict, dict]:
    """Non-uniform t_i, hop latencies l and states P; the slowest module (9 s) sets t_l."""
    t_l = 0.02 + 3.0 + 9
    b_rel = 2 * 5 * 0.1 * 1.0 + (D2_STATE + 5 * 0.1) / D2_T_C
    return dict(D2_TASKS), _with_eq1(19.0, D2_T_C, t_l, D2_STATE / D2_T_C, b_rel, 9)


def _d_ignores_centralised_keys() -> tuple[dict, dict]:
    """k, s_p, s_o, t_o, l_a, l_b, P_a, P_b, s_z and h_m do not enter Eqs 6-9."""
    z = {**D2_TASKS, "k": 4, "s_p": 2, "s_o": 3, "t_o": 1.0, "l_a": 0.2, "l_b": 0.2, "P_a": 300, "P_b": 10,
         "s_z": 500, "h_m": 5.0}
    return z, _d_nonuniform()[1]


def _d_literal() -> tuple[dict, dict]:
    """Eq 8 literal: n heartbeat streams (one per pair)."""
    z = {**D2_TASKS, "model_reading": "literal"}
    t_l = 0.02 + 3.0 + 9
    b_rel = 5 * 0.1 * 1.0 + (D2_STATE + 5 * 0.1) / D2_T_C
    return z, _with_eq1(19.0, D2_T_C, t_l, D2_STATE / D2_T_C, b_rel, 9)


def _d_slow_heartbeat() -> tuple[dict, dict]:
    """h_r = 0.5 with t_h = 5 / h_r = 10 s and a slow heartbeat link."""
    z = {"n": 4, "t_i": [8, 8, 8, 8.5], "h_r": 0.5, "t_h_mult": 5, "l_hb": 0.2}
    t_c = 32.5 + 4 * 0.05
    t_l = 0.2 + 10 + 8.5
    b_rel = 2 * 4 * 0.1 * 0.5 + (4 * 200 + 4 * 0.1) / t_c
    return z, _with_eq1(32.5, t_c, t_l, 800 / t_c, b_rel, 7)


def _d_single() -> tuple[dict, dict]:
    """n = 1: one hop (source -> m_1), one pair of twins."""
    z = {"n": 1, "t_i": 12, "l": 0.1}
    t_c = 12 + 0.1
    b_rel = 2 * 1 * 0.1 * 2.0 + (200 + 0.1) / t_c
    return z, _with_eq1(12.0, t_c, 0.05 + 1.5 + 12, 200 / t_c, b_rel, 1)


def _d_from_t_m() -> tuple[dict, dict]:
    """t_m = 60 over n = 8 (t_i = 7.5), bigger heartbeats, 'done' messages and states."""
    z = {"n": 8, "t_m": 60.0, "h_s": 0.5, "p_c": 2.0, "P": 300.0}
    t_c = 60 + 8 * 0.05
    b_rel = 2 * 8 * 0.5 * 2.0 + (8 * 300 + 8 * 2.0) / t_c
    return z, _with_eq1(60.0, t_c, 0.05 + 1.5 + 7.5, 2400 / t_c, b_rel, 15)


CENTRALISED = {
    "uniform": _c_uniform,
    "nonuniform-sp2": _c_nonuniform_sp2,
    "nonuniform-so3": _c_nonuniform_so3,
    "so-equals-n": _c_so_equals_n,
    "sp-beyond-n-minus-so": _c_sp_beyond_n_minus_so,
    "k3": _c_three_slms,
    "sp3-t_m": _c_sp3_from_t_m,
    "restart": _c_restart,
    "restart-k4": _c_restart_four_slms,
    "literal-nonuniform": _lit_nonuniform,
    "literal-sp1-k3": _lit_sp1_three_slms,
    "literal-sp-beyond-n": _lit_sp_beyond_n,
    "literal-so-equals-n": _lit_so_equals_n,
    "literal-restart": _lit_restart,
}
DISTRIBUTED = {
    "uniform": _d_uniform,
    "nonuniform": _d_nonuniform,
    "ignores-centralised-keys": _d_ignores_centralised_keys,
    "literal": _d_literal,
    "slow-heartbeat": _d_slow_heartbeat,
    "single": _d_single,
    "t_m": _d_from_t_m,
}
CASES = [pytest.param("centralised", f, id=f"centralised-{name}") for name, f in CENTRALISED.items()] + [
    pytest.param("distributed", f, id=f"distributed-{name}") for name, f in DISTRIBUTED.items()
]
VIA_CLI = [
    pytest.param("centralised", _c_nonuniform_sp2, id="centralised-nonuniform-sp2"),
    pytest.param("centralised", _c_three_slms, id="centralised-k3"),
    pytest.param("centralised", _c_restart, id="centralised-restart"),
    pytest.param("centralised", _lit_nonuniform, id="centralised-literal-nonuniform"),
    pytest.param("distributed", _d_nonuniform, id="distributed-nonuniform"),
    pytest.param("distributed", _d_literal, id="distributed-literal"),
]


def _config(design: str, z: dict) -> dict[str, Any]:
    data = {**BASE, "design": design, **z}
    for a, b in (("t_h", "t_h_mult"), ("t_i", "t_m")):  # a case giving one of a pair replaces the other
        if b in z:
            data.pop(a, None)
    return data


def _assert_close(actual: dict[str, Any], expected: dict[str, float]) -> None:
    for key, value in expected.items():
        assert float(actual[key]) == pytest.approx(value, rel=1e-9, abs=1e-9), key


def harness_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)


def _sets(data: dict[str, Any]) -> list[str]:
    args = []
    for key, value in data.items():
        text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        args += ["--set", f"{key}={text}"]
    return args


def _csv_rows(out: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(out))
    return list(reader.fieldnames or []), list(reader)


# --- the tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("design", "case"), CASES)
def test_model_matches_hand_arithmetic(design, case):
    z, expected = case()
    m = model.evaluate(config.build(_config(design, z)))
    assert (m.design, m.C) == (design, None)
    _assert_close(m.as_row(), expected)


@pytest.mark.parametrize(("design", "case"), VIA_CLI)
def test_cli_model_matches_hand_arithmetic(design, case):
    z, expected = case()
    data = _config(design, z)
    data.pop("design")
    proc = harness_cli("model", "--design", design, *_sets(data), "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    header, rows = _csv_rows(proc.stdout)
    assert header == COLUMNS
    assert len(rows) == 1
    assert rows[0]["design"] == design and rows[0]["mechanism"] == data["mechanism"]
    _assert_close(rows[0], expected)


def test_cli_model_csv_is_one_header_and_one_row():
    """The README's command: exactly a header and one row; equal to the in-process model of the same z."""
    proc = harness_cli("model", "--design", "centralised", "--set", "n=10", "--set", "t_i=5",
                       "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0] == ",".join(COLUMNS)
    _, rows = _csv_rows(proc.stdout)
    assert float(rows[0]["t_m"]) == 50.0
    expected = model.evaluate(config.build({"design": "centralised", "n": 10, "t_i": 5}))
    assert rows[0]["design"] == "centralised" and rows[0]["mechanism"] == "state-sharing"
    _assert_close(rows[0], {k: getattr(expected, k) for k in NUMBERS})


def test_cli_model_cost_column():
    """Eq 10 by hand: C = alpha R_a + beta R_r + gamma B_tot + delta Q_r, a C column after Q_r."""
    z, e = _c_uniform()
    data = _config("centralised", z)
    data.pop("design")
    weights = {"alpha": 1.0, "beta": 2.0, "gamma": 0.01, "delta": 0.5}
    proc = harness_cli("model", *_sets({**data, **weights}), "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    header, rows = _csv_rows(proc.stdout)
    assert header == [*COLUMNS, "C"]
    assert len(rows) == 1
    c = 1.0 * e["R_a"] + 2.0 * e["R_r"] + 0.01 * e["B_tot"] + 0.5 * e["Q_r"]
    _assert_close(rows[0], {**e, "C": c})


def test_cost_with_some_weights_missing():
    """A weight not given counts as 0; with no weight at all there is no C."""
    z, e = _d_uniform()
    m = model.evaluate(config.build({**_config("distributed", z), "gamma": 0.5}))
    assert m.C is not None
    assert math.isclose(m.C, 0.5 * e["B_tot"], rel_tol=1e-9)
    assert model.evaluate(config.build(_config("distributed", z))).C is None


# --- monolith -------------------------------------------------------------------------------------------


def test_monolith():
    """No network and no mechanism: t_c = t_m, R_a = 1, no recovery (NaN), no bandwidth, Q_r = 0."""
    m = model.evaluate(config.build({**BASE, "design": "monolith", "n": 4, "t_i": [1, 2, 3, 4]}))
    assert (m.t_m, m.t_c, m.R_a) == (10.0, 10.0, 1.0)
    assert math.isnan(m.t_l) and math.isnan(m.t_r) and math.isnan(m.R_r)
    assert (m.B_op, m.B_rel, m.B_tot, m.Q_r) == (0.0, 0.0, 0.0, 0.0)


def test_monolith_cost_ignores_unweighted_nan():
    """beta = 0: the monolith's undefined R_r does not poison C; beta > 0 leaves C undefined."""
    m = model.evaluate(config.build({"design": "monolith", "t_m": 30, "alpha": 1, "gamma": 1, "delta": 1}))
    assert m.C == 1.0
    m = model.evaluate(config.build({"design": "monolith", "t_m": 30, "beta": 1}))
    assert m.C is not None and math.isnan(m.C)


def test_cli_monolith_csv_and_json():
    proc = harness_cli("model", "--design", "monolith", "--set", "n=4", "--set", "t_i=1,2,3,4",
                       "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    header, rows = _csv_rows(proc.stdout)
    assert header == COLUMNS and len(rows) == 1
    row = rows[0]
    finite = ("t_m", "t_c", "R_a", "B_op", "B_rel", "B_tot", "Q_r")
    assert [float(row[k]) for k in finite] == [10, 10, 1, 0, 0, 0, 0]
    assert all(math.isnan(float(row[k])) for k in ("t_l", "t_r", "R_r"))
    proc = harness_cli("model", "--design", "monolith", "--set", "t_m=12", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert (row["t_m"], row["t_c"], row["R_a"], row["B_tot"], row["Q_r"]) == (12.0, 12.0, 1.0, 0.0, 0.0)
    assert row["t_l"] is None and row["t_r"] is None and row["R_r"] is None


def test_optimise_ranks_nan_cost_last():
    pairs = [("monolith", "state-sharing"), ("centralised", "state-sharing")]
    rows = optimise.evaluate_grid({"t_m": 60}, pairs, {"n": [3, 5, 8]}, (0.0, 1.0, 0.0, 0.0))
    costs = [row["C"] for row in rows]
    finite = [c for c in costs if not math.isnan(c)]
    assert costs[: len(finite)] == sorted(finite)
