#!/usr/bin/env python
"""How fast the random features of the BO kernels converge to the kernel.

BoTorch's pathwise sampling (``draw_matheron_paths``, pathwise Thompson sampling,
``get_optimal_samples``) draws prior paths from a kernel's random features
(:mod:`gp_ntk.bo.pathwise`, :class:`gp_ntk.RandomFeatureKernel`: the parameter gradients of a
random network of the kernel's architecture for the NTK). This script measures, for
:func:`gp_ntk.bo.bo_kernel`'s unit-variance NTK with ReLU and with ReLU squared (the default),
the relative Frobenius error :math:`\\lVert\\hat K - K\\rVert_F / \\lVert K\\rVert_F` of the
feature kernel on ``--points`` random points of :math:`[-1, 1]^d` against the exact matrix, for
each number of features, averaged over ``--seeds`` independent draws, and prints a table.

Usage::

    python benchmarks/bo_features.py                       # d = 3, 30 points, 5 seeds
    python benchmarks/bo_features.py --features 256 4096 --dim 10
    python benchmarks/bo_features.py --quick               # seconds
"""

from __future__ import annotations

import argparse
import platform
import statistics

import torch

import gp_ntk
from gp_ntk.activations import ArcCos
from gp_ntk.approximations import RandomFeatureKernel
from gp_ntk.kernels import UnitVarianceKernel

#: the activations compared, by the name the table prints
ACTIVATIONS = {"ReLU": "relu", "ReLU squared (default)": ArcCos(2)}


def feature_errors(
    activation, dim: int, points: int, features: list[int], seeds: int, depth: int = 3
) -> dict[int, list[float]]:
    """Per number of features, the relative Frobenius errors of ``seeds`` independent feature draws."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(points, dim, generator=generator, dtype=torch.float64) * 2 - 1
    # the BO kernel's initial hyperparameters: weight variances 2, bias variance 1
    network = gp_ntk.NTKKernel(depth, activation, 2.0, 1.0, ard_num_dims=dim).double()
    kernel = UnitVarianceKernel(network)
    with torch.no_grad():
        exact = kernel(x).to_dense()
        errors = {}
        for count in features:
            errors[count] = []
            for seed in range(seeds):
                approx = RandomFeatureKernel(kernel, num_features=count, seed=seed).double()(x).to_dense()
                errors[count].append(float((approx - exact).norm() / exact.norm()))
    return errors


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--dim", type=int, default=3)
    parser.add_argument("--points", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="256 and 1024 features, two seeds")
    args = parser.parse_args(argv)
    if args.quick:
        args.features, args.seeds = [256, 1024], 2
    print(
        f"{platform.machine()}, torch {torch.__version__}; unit-variance NTK, depth {args.depth},"
        f" d = {args.dim}, {args.points} points, mean (min-max) over {args.seeds} feature draws"
    )
    print("\n| activation | " + " | ".join(f"D = {count}" for count in args.features) + " |")
    print("|---|" + "---:|" * len(args.features))
    results = {}
    for name, activation in ACTIVATIONS.items():
        errors = feature_errors(activation, args.dim, args.points, args.features, args.seeds, args.depth)
        results[name] = {count: statistics.mean(values) for count, values in errors.items()}
        cells = [
            f"{statistics.mean(values):.3f} ({min(values):.2f}–{max(values):.2f})"
            for values in errors.values()
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return results


if __name__ == "__main__":
    main()
