"""One experiment end to end (testbed, run, warm-up, provenance), and sweeps of many."""
