"""The `harness` command line: one line and exit code 2 for every user mistake."""
