"""Reference MANO implementations (paper section V, Figs 2-5), each service a separate OS process.

Roles: `worker` (a microservice m_i doing task i), `slm` (centralised orchestrator, k >= 2 of them with
heartbeats, request logging and state sharing, or the restart baseline), `module` (one instance of a
duplicated module in the distributed chain) and `monolith` (all tasks in one process: measures t_m).
A service reads its whole configuration from the MANOBENCH_SPEC environment variable (JSON, see
`targets.spec`), so every address it calls is chosen by the harness and can be routed through a latency
proxy or a netem'd link.
"""
