#!/usr/bin/env bash
# Install gp_ntk with its test extras (torch pinned by constraints.txt), lint, build the API
# reference (fails on broken references), then run the suite with the package's doctests.
# Arguments go to pytest: `bash scripts/test.sh -m "not slow"` is the fast lane.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -c constraints.txt "torch==2.13.0"
python -m pip install -q -c constraints.txt -e ".[dev]"
ruff check .
python -m sphinx -q -W -n --keep-going -b html docs docs/_build/html
python -m pytest -q "$@"
