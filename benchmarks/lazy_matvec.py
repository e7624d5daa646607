#!/usr/bin/env python
"""Matrix-vector products with the lazy, blocked kernel: K v at large N without forming K.

CG and Lanczos (GPyTorch's inference above ``max_cholesky_size``) only need products ``K V``
with a few right-hand sides. gp_ntk kernels return a
:class:`gp_ntk.engine.lazy.BlockedKernelLinearOperator` there, whose product evaluates the kernel one
row block at a time and multiplies it at once, so memory stays linear in N. This script times
one product (median of ``--repeats`` after a warm-up) with 1 and with ``--rhs`` right-hand
sides and samples the peak resident memory above the baseline, next to the size one dense
N x N matrix would have.

Usage::

    python benchmarks/lazy_matvec.py                           # N = 10000, 20000, 50000; float64, float32
    python benchmarks/lazy_matvec.py --sizes 50000 --kernels ntk-relu --dtypes float32
    python benchmarks/lazy_matvec.py --quick

``entries/s`` is N^2 divided by the time of one product: the kernel entries evaluated per second
(for NNGP+NTK-style kernels every entry runs the whole recursion).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time

import gpytorch
import torch

import gp_ntk

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from large_n import PeakMemory  # noqa: E402

KERNELS = {
    "nngp-relu": ("gp_ntk NNGP relu", lambda depth: gp_ntk.NNGPKernel(depth, "relu", 2.0, 0.1)),
    "ntk-relu": ("gp_ntk NTK relu", lambda depth: gp_ntk.NTKKernel(depth, "relu", 2.0, 0.1)),
    "nngp-erf": ("gp_ntk NNGP erf", lambda depth: gp_ntk.NNGPKernel(depth, "erf")),
}


def time_product(operator, rhs: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median seconds of ``operator @ rhs`` and the peak extra memory (bytes) of one product."""
    with torch.no_grad():
        operator @ rhs[..., :1]  # warm-up (compilation of the block function, thread pools)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = operator @ rhs
            times.append(time.perf_counter() - start)
        with PeakMemory(rhs.device) as peak:
            result = operator @ rhs
    if not torch.isfinite(result).all():
        raise FloatingPointError("non-finite product")
    return statistics.median(times), peak.extra_bytes


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 20000, 50000])
    parser.add_argument("--dtypes", nargs="+", choices=("float64", "float32"), default=["float64", "float32"])
    parser.add_argument("--kernels", nargs="+", choices=list(KERNELS), default=["nngp-relu"])
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument(
        "--rhs", type=int, default=11, help="right-hand sides of the second product (CG probes)"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="N = 3000 only, float64")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.dtypes = [3000], ["float64"]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"{dt.datetime.now():%Y-%m-%d %H:%M}, {platform.system()} {platform.machine()}, {os.cpu_count()} cores,"
        f" torch {torch.__version__} ({args.threads} thread(s)), gpytorch {gpytorch.__version__}, device {device};"
        f" d = {args.dim}, depth {args.depth}, median of {args.repeats}"
    )
    rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for n in args.sizes:
            generator = torch.Generator().manual_seed(n)
            x = torch.randn(n, args.dim, dtype=dtype, generator=generator).to(device)
            rhs = torch.randn(n, args.rhs, dtype=dtype, generator=generator).to(device)
            for key in args.kernels:
                kernel = KERNELS[key][1](args.depth).to(device=device, dtype=dtype)
                with gp_ntk.settings.lazy_evaluation("always"):
                    operator = kernel(x).evaluate_kernel()
                single, single_peak = time_product(operator, rhs[:, :1], args.repeats)
                several, several_peak = time_product(operator, rhs, args.repeats)
                row = {
                    "kernel": key,
                    "dtype": dtype_name,
                    "n": n,
                    "operator": type(operator).__name__,
                    "seconds_1": single,
                    "seconds_k": several,
                    "peak_bytes": max(single_peak, several_peak),
                    "dense_bytes": n * n * dtype.itemsize,
                }
                rows.append(row)
                print(
                    f"  {key} {dtype_name} N={n}: {single:.2f} s / product, {several:.2f} s with {args.rhs}",
                    file=sys.stderr,
                    flush=True,
                )
    print(
        f"\n| kernel | dtype | N | K v [s] | K V, {args.rhs} columns [s] | entries/s (K v) |"
        " peak extra memory [MB] | one dense N x N [MB] |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {KERNELS[r['kernel']][0]} | {r['dtype']} | {r['n']} | {r['seconds_1']:.2f} | {r['seconds_k']:.2f} |"
            f" {r['n'] ** 2 / r['seconds_1']:.2e} | {r['peak_bytes'] / 1e6:.0f} | {r['dense_bytes'] / 1e6:.0f} |"
        )
    print(
        f"\noperator: {rows[0]['operator'] if rows else 'n/a'}; peak: resident memory sampled during one product."
    )
    return rows


if __name__ == "__main__":
    main()
