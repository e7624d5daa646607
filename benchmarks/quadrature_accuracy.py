"""Accuracy and cost of ``gp_ntk.Numerical`` (Gauss-Hermite duals) against closed forms.

For each activation with a closed-form dual in :mod:`gp_ntk.activations`, the same function
wrapped in ``Numerical(fn, degree=D)`` is compared with it on a grid of Gaussian covariances
``(var1, var2, c)`` (``cov = c * sqrt(var1 * var2)``), correlations including -1, 0 and +1,
in float64. Reported per activation and degree:

* max absolute error of ``dual`` and of ``derivative_dual`` over the grid;
* max relative error ``|numerical - exact| / |exact|`` over the grid points where
  ``|exact| > 1e-12`` (e.g. ``sin`` at ``c = 0`` and ``relu'`` at ``c = -1`` are exactly 0);
* the time of one ``dual`` and one ``derivative_dual`` call on a 200 x 200 covariance
  (``var1`` of shape (200, 1), ``cov`` (200, 200), ``var2`` (1, 200)): the best of
  ``--repeats`` timed calls after one warm-up call (the minimum is the least sensitive to
  other load on the machine).

Usage (the table in ``docs/kernels.md`` comes from the second line; one thread keeps the
timings steady on a machine shared with other jobs)::

    python benchmarks/quadrature_accuracy.py
    python benchmarks/quadrature_accuracy.py --markdown --repeats 3 --threads 1
    python benchmarks/quadrature_accuracy.py --degrees 8 32 --variances 0.5 2
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import torch

import gp_ntk

DTYPE = torch.float64
DEFAULT_DEGREES = (4, 8, 16, 32, 64)
DEFAULT_VARIANCES = (0.1, 1.0, 4.0)
CORRELATIONS = (-1.0, -0.99, -0.9, -0.5, -0.1, 0.0, 0.1, 0.5, 0.9, 0.99, 1.0)
RELATIVE_FLOOR = 1e-12


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf-based) GELU, the function :class:`gp_ntk.GELU` integrates in closed form."""
    return torch.nn.functional.gelu(x)


CASES = (
    ("relu", torch.relu, gp_ntk.ReLU()),
    ("erf", torch.erf, gp_ntk.Erf()),
    ("sin", torch.sin, gp_ntk.Sin()),
    ("gelu", gelu, gp_ntk.GELU()),
)


def covariance_grid(variances) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat tensors ``var1, cov, var2`` over all (var1, var2, c) combinations."""
    rows = list(itertools.product(variances, variances, CORRELATIONS))
    var1 = torch.tensor([r[0] for r in rows], dtype=DTYPE)
    var2 = torch.tensor([r[1] for r in rows], dtype=DTYPE)
    c = torch.tensor([r[2] for r in rows], dtype=DTYPE)
    return var1, c * torch.sqrt(var1 * var2), var2


def errors(approx: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    diff = (approx - exact).abs()
    keep = exact.abs() > RELATIVE_FLOOR
    relative = (diff[keep] / exact[keep].abs()).max() if keep.any() else torch.tensor(0.0)
    return float(diff.max()), float(relative)


def timing_inputs(n: int = 200, d: int = 5, seed: int = 0):
    """First-layer covariances of n random inputs: (n, 1), (n, n), (1, n)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator, dtype=DTYPE)
    y = torch.randn(n, d, generator=generator, dtype=DTYPE)
    return (x * x).mean(-1, keepdim=True), x @ y.T / d, (y * y).mean(-1).unsqueeze(0)


def time_call(fn, *args, repeats: int = 3) -> float:
    fn(*args)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def run(degrees, variances, repeats: int):
    var1, cov, var2 = covariance_grid(variances)
    t1, tcov, t2 = timing_inputs()
    rows = []
    with torch.no_grad():
        for name, fn, exact_activation in CASES:
            exact = exact_activation.dual(var1, cov, var2)
            exact_dot = exact_activation.derivative_dual(var1, cov, var2)
            closed_ms = 1e3 * time_call(exact_activation.dual, t1, tcov, t2, repeats=repeats)
            closed_dot_ms = 1e3 * time_call(exact_activation.derivative_dual, t1, tcov, t2, repeats=repeats)
            rows.append(
                (name, "closed form", math.nan, math.nan, math.nan, math.nan, closed_ms, closed_dot_ms)
            )
            for degree in degrees:
                numerical = gp_ntk.Numerical(fn, degree=degree)
                abs_q, rel_q = errors(numerical.dual(var1, cov, var2), exact)
                abs_dq, rel_dq = errors(numerical.derivative_dual(var1, cov, var2), exact_dot)
                ms = 1e3 * time_call(numerical.dual, t1, tcov, t2, repeats=repeats)
                dot_ms = 1e3 * time_call(numerical.derivative_dual, t1, tcov, t2, repeats=repeats)
                rows.append((name, str(degree), abs_q, rel_q, abs_dq, rel_dq, ms, dot_ms))
    return rows


HEADER = (
    "activation",
    "degree",
    "dual max abs",
    "dual max rel",
    "deriv max abs",
    "deriv max rel",
    "dual ms",
    "deriv ms",
)


def _fmt(value) -> str:
    if isinstance(value, str):
        return value
    if math.isnan(value):
        return "-"
    return f"{value:.1e}"


def _fmt_ms(value: float) -> str:
    return f"{value:.3g}"


def format_table(rows, markdown: bool) -> str:
    cells = [[r[0], r[1], *(_fmt(v) for v in r[2:6]), _fmt_ms(r[6]), _fmt_ms(r[7])] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADER)]
    if markdown:
        lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(HEADER, widths)) + " |"]
        lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    else:
        lines = ["  ".join(h.rjust(w) for h, w in zip(HEADER, widths))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--degrees", type=int, nargs="+", default=list(DEFAULT_DEGREES))
    parser.add_argument("--variances", type=float, nargs="+", default=list(DEFAULT_VARIANCES))
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per entry (best of)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(
        f"grid: var1, var2 in {args.variances}, c in {list(CORRELATIONS)}; float64; "
        f"relative error where |exact| > {RELATIVE_FLOOR:g}; "
        f"timing: 200 x 200 covariance, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(format_table(run(args.degrees, args.variances, args.repeats), args.markdown))


if __name__ == "__main__":
    main()
