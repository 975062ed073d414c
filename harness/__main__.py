"""`python -m harness` runs the CLI."""

from harness.cli.commands import main

main()
