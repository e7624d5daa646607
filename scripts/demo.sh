#!/usr/bin/env bash
# Install gp_ntk with the example extras (torch pinned by constraints.txt), then run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -c constraints.txt "torch==2.13.0"
python -m pip install -q -c constraints.txt -e ".[examples]"
python examples/demo.py "$@"
