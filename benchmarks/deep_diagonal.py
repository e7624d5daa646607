#!/usr/bin/env python
"""Deep kernels of every activation: the diagonal of k(X, X) against diag=True, and PSD-ness.

For each activation (every entry of ``gp_ntk.activations.ACTIVATIONS`` plus ``ArcCos(2)`` and
``Numerical(torch.tanh)``), weight variance, depth and dtype the script evaluates the NNGP and
the NTK of ``NNGPKernel(depth, activation, weight_variance, bias_variance)`` on ``N`` random
points with two duplicated rows, and prints

* ``diag``: the largest relative difference between the diagonal of the full matrix and
  ``diag=True``;
* ``dup``: the largest relative difference between the entry of a duplicated pair of rows and
  the diagonal;
* ``eig``: the smallest over the largest eigenvalue of the matrix (computed in float64);
  negative beyond rounding means the matrix is not positive semi-definite.

Inputs are standard normal (scaled by 0.4 for ``ArcCos(2)``, which squares the variance in
every layer and diverges from larger ones). Weight variances: the default 1.0 and 4.0 (the chaotic regime of erf, sin and gelu, where the
correlation map expands at c = 1). A cell reads ``overflow``/``underflow`` where the kernel
refuses the configuration (``FloatingPointError``).

Examples::

    python benchmarks/deep_diagonal.py              # depths 10 30 50 100, float32 and float64
    python benchmarks/deep_diagonal.py --quick      # depth 10 and 30, fewer points
"""

from __future__ import annotations

import argparse
import time

import torch

import gp_ntk
from gp_ntk.activations import ACTIVATIONS, ArcCos, Numerical


def _activations() -> dict[str, gp_ntk.activations.Activation]:
    found = {name: make() for name, make in ACTIVATIONS.items()}
    found["arccos2"] = ArcCos(2)
    found["numerical-tanh"] = Numerical(torch.tanh)
    return found


def _inputs(num_points: int, dim: int, dtype: torch.dtype, seed: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(num_points, dim, generator=generator, dtype=torch.float64)
    x[-1] = x[0]  # duplicated rows
    x[-2] = x[1]
    return x.to(dtype)


def _measure(kernel: gp_ntk.NNGPKernel, x: torch.Tensor) -> dict[str, tuple[float, float, float] | str]:
    results: dict[str, tuple[float, float, float] | str] = {}
    try:
        with torch.no_grad():
            nngp, ntk = kernel.nngp_and_ntk(x, x)
            nngp_diag, ntk_diag = kernel.nngp_and_ntk(x, x, diag=True)
    except FloatingPointError as error:
        word = "underflow" if "underflow" in str(error) else "overflow"
        return {"nngp": word, "ntk": word}
    for name, matrix, diagonal in (("nngp", nngp, nngp_diag), ("ntk", ntk, ntk_diag)):
        scale = diagonal.abs().clamp_min(torch.finfo(diagonal.dtype).tiny)
        diag_error = float(((matrix.diagonal() - diagonal).abs() / scale).max())
        dup_error = max(
            float((matrix[0, -1] - diagonal[0]).abs() / scale[0]),
            float((matrix[1, -2] - diagonal[1]).abs() / scale[1]),
        )
        eigenvalues = torch.linalg.eigvalsh(matrix.double())
        ratio = float(eigenvalues.min() / eigenvalues.max().abs())
        results[name] = (diag_error, dup_error, ratio)
    return results


def _cell(value: tuple[float, float, float] | str) -> str:
    if isinstance(value, str):
        return f"{value:>27}"
    diag_error, dup_error, ratio = value
    return f"{diag_error:8.1e} {dup_error:8.1e} {ratio:+9.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--depths", type=int, nargs="+", default=[10, 30, 50, 100])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    parser.add_argument("--weight-variances", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--bias-variance", type=float, default=0.1)
    parser.add_argument("--points", type=int, default=40, help="N (default 40)")
    parser.add_argument("--dim", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--activations", nargs="+", default=None, help="names (default: all)")
    parser.add_argument("--quick", action="store_true", help="depths 10 and 30, N = 20")
    args = parser.parse_args()
    if args.quick:
        args.depths, args.points = [10, 30], 20
    activations = _activations()
    if args.activations:
        activations = {name: activations[name] for name in args.activations}

    print(f"gp_ntk {gp_ntk.__file__}; N = {args.points} (2 duplicated rows), d = {args.dim}, ", end="")
    print(f"bias_variance = {args.bias_variance}; cells: diag-error dup-error min/max-eigenvalue")
    header = f"| {'activation':<15}| {'w':>4} | {'dtype':<7} | {'depth':>5} | {'NNGP':^27} | {'NTK':^27} |"
    print(header)
    print("|" + "|".join("-" * (len(part)) for part in header.split("|")[1:-1]) + "|")
    start = time.perf_counter()
    for name, activation in activations.items():
        for weight_variance in args.weight_variances:
            for dtype_name in args.dtypes:
                dtype = getattr(torch, dtype_name)
                # ArcCos(2) squares the variance in every layer: it converges only from below ~0.5
                scale = 0.4 if name == "arccos2" else 1.0
                x = _inputs(args.points, args.dim, dtype, args.seed, scale)
                for depth in args.depths:
                    kernel = gp_ntk.NNGPKernel(
                        depth, activation, weight_variance=weight_variance, bias_variance=args.bias_variance
                    ).to(dtype)
                    results = _measure(kernel, x)
                    print(
                        f"| {name:<15}| {weight_variance:4g} | {dtype_name:<7} | {depth:5d} | "
                        f"{_cell(results['nngp'])} | {_cell(results['ntk'])} |",
                        flush=True,
                    )
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
