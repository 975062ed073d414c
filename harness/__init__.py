"""manobench harness: bring up a MANO design, load it, break it, measure it, hold it against the model.

The seams follow Jepsen and Chaos Toolkit: `config` (an experiment is data), `model` (the paper's equations),
`runtime` (how targets are deployed), `load`, `measure`, `checker` and `report`; the faults are a library of
their own beside it (the top-level `faults` package, which imports nothing of the harness), driven from here.
"""

__version__ = "0.1.0"
