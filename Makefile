# `make run` and `make test` are the README's two commands; both set the machine up first.
.PHONY: setup run test test-fast lint bench clean

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/harness run --design centralised --fault slm-crash

# two workers, one test file each at a time (a file's deployments and sweeps are shared by its tests): the
# trials mostly wait, so the suite takes about half the wall time of one worker (README: Tests and benchmarks).
# Files go to the workers in collection order, the longest first (tests/conftest.py: LONGEST_FIRST), not
# xdist's default of the most tests first, which left a 4-minute file of 3 tests to run alone at the end
test: setup
	.venv/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

test-fast: setup
	.venv/bin/python -m pytest -m "not slow and not docker"

lint: setup  # the static checks CI runs: style, types, and the import contracts between the seams
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/lint-imports

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done
