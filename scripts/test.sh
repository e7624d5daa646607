#!/usr/bin/env bash
# Install gp_ntk with its test extras (torch pinned by constraints.txt), then run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -c constraints.txt "torch==2.13.0"
python -m pip install -q -c constraints.txt -e ".[dev]"
ruff check gp_ntk tests examples benchmarks
python -m pytest -q "$@"
