#!/usr/bin/env python
"""Forward + backward of the exact marginal log likelihood: network kernels against RBF/Matern/IBNN.

One training step of an exact GP is ``-mll(model(X), y).backward()``: the kernel matrix, its
Cholesky factorisation and solve, and the gradients of every hyperparameter. This script times
that step (median of ``--repeats`` after one warm-up) for each kernel inside the same model
(constant mean, ``ScaleKernel(kernel)``, Gaussian likelihood) on the same data, and, separately,
the kernel's own share: ``k(X, X)`` forward plus the backward of ``sum(G * K)`` for a fixed
random ``G`` (what the marginal likelihood's backward hands the kernel).

Usage::

    python benchmarks/mll.py                         # N = 4000, d = 32, depth 3, float64, 1 thread
    python benchmarks/mll.py --n 2000 --dtype float32 --kernels rbf ntk-relu
    python benchmarks/mll.py --quick                 # N = 500, one repeat

The Cholesky path is forced (``gpytorch.settings.max_cholesky_size``) so that every kernel is
solved the same way; the ratios are to GPyTorch's RBF kernel in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import time

import gpytorch
import torch

import gp_ntk

WEIGHT_VARIANCE, BIAS_VARIANCE = 2.0, 0.1


def _ibnn(depth: int):
    from botorch.models.kernels import InfiniteWidthBNNKernel

    kernel = InfiniteWidthBNNKernel(depth=depth)
    kernel.weight_var, kernel.bias_var = WEIGHT_VARIANCE, BIAS_VARIANCE
    return kernel


KERNELS = {
    "rbf": ("gpytorch RBF", lambda depth: gpytorch.kernels.RBFKernel()),
    "matern52": ("gpytorch Matern 5/2", lambda depth: gpytorch.kernels.MaternKernel(nu=2.5)),
    "nngp-relu": (
        "gp_ntk NNGP relu",
        lambda depth: gp_ntk.NNGPKernel(
            depth, "relu", weight_variance=WEIGHT_VARIANCE, bias_variance=BIAS_VARIANCE
        ),
    ),
    "ntk-relu": (
        "gp_ntk NTK relu",
        lambda depth: gp_ntk.NTKKernel(
            depth, "relu", weight_variance=WEIGHT_VARIANCE, bias_variance=BIAS_VARIANCE
        ),
    ),
    "nngp-erf": ("gp_ntk NNGP erf", lambda depth: gp_ntk.NNGPKernel(depth, "erf")),
    "ibnn": ("botorch IBNN (relu)", _ibnn),
}


class _Model(gpytorch.models.ExactGP):
    def __init__(self, x, y, kernel):
        super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(kernel)

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _median_time(step, repeats: int) -> float:
    step()  # warm-up: thread pools, compilation of large blocks, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def steps(key: str, x: torch.Tensor, y: torch.Tensor, depth: int):
    """``(mll_step, kernel_step, model)`` for one kernel."""
    kernel = KERNELS[key][1](depth).to(x)
    model = _Model(x, y, kernel).to(x)
    model.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)

    def mll_step():
        model.zero_grad(set_to_none=True)
        with gpytorch.settings.max_cholesky_size(10**7):
            loss = -mll(model(x), y)
        loss.backward()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{key}: non-finite loss")

    weights = torch.randn(len(x), len(x), dtype=x.dtype, generator=torch.Generator().manual_seed(1))

    def kernel_step():
        model.zero_grad(set_to_none=True)
        with gpytorch.settings.max_cholesky_size(10**7):
            matrix = model.covar_module(x).to_dense()
        (weights * matrix).sum().backward()

    return mll_step, kernel_step, model


def _finite_grads(model) -> bool:
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def measure(key: str, x: torch.Tensor, y: torch.Tensor, depth: int, repeats: int) -> dict:
    mll_step, kernel_step, model = steps(key, x, y, depth)
    grads_finite = True
    mll_time = _median_time(mll_step, repeats)
    for parameter in model.parameters():
        if parameter.grad is not None and not torch.isfinite(parameter.grad).all():
            grads_finite = False
    kernel_time = _median_time(kernel_step, repeats)
    return {"kernel": key, "mll": mll_time, "kernel_only": kernel_time, "finite": grads_finite}


def measure_interleaved(
    keys: list[str], x: torch.Tensor, y: torch.Tensor, depth: int, repeats: int
) -> list[dict]:
    """:func:`measure` for several kernels, their steps timed round-robin."""
    prepared = {key: steps(key, x, y, depth) for key in keys}
    times = {key: {"mll": [], "kernel_only": []} for key in keys}
    for part, index in (("mll", 0), ("kernel_only", 1)):
        for repeat in range(repeats + 1):  # the first round is a warm-up
            for key in keys:
                step = prepared[key][index]
                start = time.perf_counter()
                step()
                if repeat:
                    times[key][part].append(time.perf_counter() - start)
    results = []
    for key in keys:
        result = {"kernel": key, "finite": _finite_grads(prepared[key][2])}
        for part in ("mll", "kernel_only"):
            result[part] = statistics.median(times[key][part])
            if "rbf" in times:
                ratios = [t / r for t, r in zip(times[key][part], times["rbf"][part])]
                result[part + "_ratio"] = statistics.median(ratios)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kernels", nargs="+", choices=list(KERNELS), default=list(KERNELS))
    parser.add_argument("--quick", action="store_true", help="N = 500, one repeat")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="run the kernels' steps round-robin (each repeat times every kernel once): load from other "
        "processes then affects all kernels alike; ratios are medians of the per-repeat ratios",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.repeats = 500, 1
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.dim, dtype=dtype, generator=generator)
    y = torch.sin(x[:, :3].sum(-1)) + 0.1 * torch.randn(args.n, dtype=dtype, generator=generator)
    print(
        f"{dt.datetime.now():%Y-%m-%d %H:%M}, {platform.system()} {platform.machine()}, {os.cpu_count()} cores,"
        f" torch {torch.__version__} ({args.threads} thread(s)), gpytorch {gpytorch.__version__};"
        f" N = {args.n}, d = {args.dim}, depth {args.depth}, {args.dtype}, Cholesky, median of {args.repeats}"
    )
    if args.interleave:
        results = measure_interleaved(args.kernels, x, y, args.depth, args.repeats)
    else:
        results = [measure(key, x, y, args.depth, args.repeats) for key in args.kernels]
    reference = next((r for r in results if r["kernel"] == "rbf"), None)
    print("\n| kernel | MLL forward + backward [s] | / RBF | kernel forward + backward [s] | / RBF |")
    print("|---|---:|---:|---:|---:|")
    for r in results:

        def ratio(name: str, r: dict = r) -> str:
            if name + "_ratio" in r:
                return f"{r[name + '_ratio']:.2f}"
            return f"{r[name] / reference[name]:.2f}" if reference else "n/a"

        flag = "" if r["finite"] else " (non-finite gradients!)"
        print(
            f"| {KERNELS[r['kernel']][0]}{flag} | {r['mll']:.3f} | {ratio('mll')} |"
            f" {r['kernel_only']:.3f} | {ratio('kernel_only')} |"
        )
    print(
        "\nMLL: -ExactMarginalLogLikelihood(model(X), y).backward() with ScaleKernel(kernel), constant mean and"
        " Gaussian likelihood; kernel: ScaleKernel(kernel)(X).to_dense() and the backward of sum(G * K)."
    )
    return results


if __name__ == "__main__":
    main()
