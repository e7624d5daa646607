"""Smoke runs of the benchmark scripts at tiny sizes: they run, their tables hold finite numbers.

Speed is not asserted here (``docs/benchmarks.md`` holds the measured figures); these tests
only keep the scripts working as the library changes.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"gp_ntk_benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_kernel_eval_reports_ratios_for_both_outputs_and_eager_rows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    kernel_eval = _load("kernel_eval")
    kernels = ["nngp+ntk-relu", "nngp-relu-eager", "ibnn", "rbf"]
    arguments = [
        "--sizes",
        "64",
        "--dtypes",
        "float64",
        "--repeats",
        "1",
        "--threads",
        "1",
        "--isolation",
        "none",
    ]
    kernel_eval.main([*arguments, "--kernels", *kernels])
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| kernel")]
    assert len(rows) == len(kernels)
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        time, to_rbf, ibnn_over, peak = (float(cells[i]) for i in (3, 4, 5, 6))
        assert time > 0 and to_rbf > 0 and ibnn_over > 0 and peak >= 0


def test_mll_benchmark_times_forward_and_backward() -> None:
    results = _load("mll").main(["--quick", "--kernels", "rbf", "ntk-relu", "--n", "100"])
    assert [r["kernel"] for r in results] == ["rbf", "ntk-relu"]
    for r in results:
        assert r["finite"] and r["mll"] > 0 and r["kernel_only"] > 0


def test_lazy_matvec_uses_the_blocked_operator() -> None:
    rows = _load("lazy_matvec").main(
        ["--sizes", "300", "--dtypes", "float64", "--rhs", "3", "--kernels", "ntk-relu"]
    )
    assert rows[0]["operator"] == "BlockedKernelLinearOperator"
    assert rows[0]["seconds_1"] > 0 and math.isfinite(rows[0]["seconds_k"])


def test_neural_tangents_comparison_agrees_where_neural_tangents_is_installed() -> None:
    pytest.importorskip("neural_tangents")
    rows = _load("neural_tangents_compare").main(["--sizes", "50", "--dtypes", "float64", "--repeats", "1"])
    assert rows[0]["max_relative_difference"] < 1e-6


def test_approximation_accuracy_quick_run_matches_cholesky() -> None:
    """The --quick run solves the exact GP by CG on the lazy operator; at n = 2000 a dense
    Cholesky solve checks its predictive means and variances."""
    results = _load("approximation_accuracy").main(["--quick"])
    exact = results[0]
    assert exact.method.startswith("exact")
    assert exact.extra["dense_mean_relative_difference"] < 1e-6
    assert exact.extra["dense_variance_max_relative_difference"] < 1e-6
    assert {r.method for r in results[1:]} == {"random features", "Nyström / SGPR", "NeuralEF features"}
    for r in results:
        assert math.isfinite(r.rmse) and math.isfinite(r.nll_variance_points) and r.fit_seconds >= 0
        assert r.mean_distance is not None and math.isfinite(r.mean_distance)
