"""Every registered activation that names a neural-tangents ``stax`` layer, as the deep NNGP and
NTK against neural-tangents' ``kernel_fn`` in float64 (skipped where neural-tangents is absent).

The comparison itself lives in ``benchmarks/stax_parity.py``, which prints the full table.
Bias-free ``Sign`` networks are compared at depth 1 only: ``stax.Sign`` computes the angle of
identical points as ``arctan2(sqrt(q1 q2 - q12**2), q12)``, whose rounding (~1e-8) the sign's
correlation map (infinite slope at c = 1) amplifies layer by layer; gp_ntk's diagonal is exact
(E[sign(u)^2] = 1), neural-tangents' is 0.79 instead of 0.8 at depth 3 on these inputs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")
pytest.importorskip("neural_tangents")

import jax  # noqa: E402

from gp_ntk import Sign  # noqa: E402
from gp_ntk.activations import activation_examples  # noqa: E402

pytestmark = pytest.mark.slow

jax.config.update("jax_enable_x64", True)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _parity():
    spec = importlib.util.spec_from_file_location(
        "gp_ntk_benchmark_stax_parity", BENCHMARKS / "stax_parity.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


PARITY = _parity()
NAMED = [act for act in activation_examples() if act.stax_layer() is not None]
CASES = [
    pytest.param(act, depth, parameterization, bias, id=f"{act!r}-{depth}-{parameterization}-{bias}")
    for act in NAMED
    for depth in (1, 2, 3)
    for parameterization in ("ntk", "standard")
    for bias in (True, False)
    if bias or depth == 1 or not isinstance(act, Sign)
]


@pytest.mark.parametrize("act,depth,parameterization,bias", CASES)
def test_matches_neural_tangents(act, depth, parameterization, bias):
    x1, x2 = PARITY._inputs(6, 3)
    nngp_error, ntk_error, note = PARITY.compare(act, depth, parameterization, bias, x1, x2)
    if note:
        # a refused overflow must be one where neural-tangents' kernel is not finite either
        assert note == "overflow"
        return
    assert nngp_error < 1e-7 and ntk_error < 1e-7
