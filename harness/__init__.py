"""manobench harness: bring up a MANO design, load it, break it, measure it, hold it against the model.

The seams follow Jepsen and Chaos Toolkit: `config` (an experiment is data), `model` (the paper's equations),
`runtime` (how targets are deployed), `faults`, `load`, `measure`, `checker` and `report`.
"""

__version__ = "0.1.0"
