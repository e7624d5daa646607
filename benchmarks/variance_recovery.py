"""Do marginal-likelihood fits recover known weight and bias variances? Repeated prior draws.

Draws ``--draws`` data sets from a GP whose kernel is a known NNGP (default: depth-2 erf
network, ``weight_variance = 2.0``, ``bias_variance = 0.5``, noise variance 0.01, n = 400
standard-normal inputs in d = 3), fits a model with the same structure from a deliberately wrong
start (1.0, 0.1) by L-BFGS on the exact marginal likelihood, and reports the mean, standard
deviation and worst relative error of each estimate. The bounds in
``tests/test_fitting.py::test_fit_recovers_known_variances_from_nngp_prior_draws`` come from
this spread.

The model has no ``ScaleKernel`` and a zero mean: an outputscale would duplicate the last
layer's weight variance and a constant mean the bias variance, and neither pair is
identifiable from data (see docs/inference.md).

Usage::

    python benchmarks/variance_recovery.py --draws 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import gp_ntk
from gp_ntk.models import ExactGPModel


def draw(kernel, x: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    with torch.no_grad():
        cov = kernel.forward(x, x) + noise * torch.eye(x.shape[0], dtype=x.dtype)
        g = torch.Generator().manual_seed(seed)
        return torch.linalg.cholesky(cov) @ torch.randn(x.shape[0], generator=g, dtype=x.dtype)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--activation", default="erf")
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--weight-variance", type=float, default=2.0)
    parser.add_argument("--bias-variance", type=float, default=0.5)
    parser.add_argument("--noise", type=float, default=0.01)
    args = parser.parse_args(argv)
    torch.set_default_dtype(torch.float64)
    truth = {"weight": args.weight_variance, "bias": args.bias_variance, "noise": args.noise}
    estimates: dict[str, list[float]] = {name: [] for name in truth}
    start = time.perf_counter()
    for seed in range(args.draws):
        x = torch.randn(args.n, 3, generator=torch.Generator().manual_seed(100 + seed))
        kernel = gp_ntk.NNGPKernel(args.depth, args.activation, args.weight_variance, args.bias_variance)
        y = draw(kernel, x, args.noise, seed)
        model = ExactGPModel(
            x,
            y,
            kernel=gp_ntk.NNGPKernel(args.depth, args.activation, 1.0, 0.1),
            scale=False,
            standardize_inputs=False,
        )
        model.mean_module.constant.requires_grad_(False)
        gp_ntk.fit(model, optimizer="lbfgs", max_iter=60, progress=False)
        fitted = model.covar_module
        values = {
            "weight": float(fitted.weight_variance),
            "bias": float(fitted.bias_variance),
            "noise": float(model.likelihood.noise),
        }
        for name, value in values.items():
            estimates[name].append(value)
        print(
            f"draw {seed + 1:2d}/{args.draws}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()),
            flush=True,
        )

    print(
        f"\n{args.activation} NNGP depth {args.depth}, n = {args.n}, d = 3, {args.draws} draws, "
        f"{time.perf_counter() - start:.0f} s"
    )
    print("| parameter | truth | mean estimate | sd | sd / truth | worst relative error |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, values in estimates.items():
        mean, sd = statistics.fmean(values), statistics.stdev(values)
        worst = max(abs(v - truth[name]) / truth[name] for v in values)
        print(f"| {name} | {truth[name]} | {mean:.4f} | {sd:.4f} | {sd / truth[name]:.3f} | {worst:.3f} |")


if __name__ == "__main__":
    main()
