"""Exact GP at large N with the lazy, blocked kernel: training steps and prediction in O(N) memory.

Above GPyTorch's ``max_cholesky_size`` an exact GP is solved by CG and stochastic Lanczos
quadrature (BBMM), which only needs products ``K v``. gp_ntk kernels return a
:class:`gp_ntk.engine.lazy.BlockedKernelLinearOperator` there, so each product evaluates the kernel
in blocks of rows and the N x N matrix never exists. This script trains an exact NTK GP for a
few Adam steps and predicts (mean and LOVE variances) on held-out points, and reports time per
step, prediction time, test RMSE / 95 % coverage and the peak resident memory above the
baseline, against what one dense float64 N x N matrix would take.

Usage::

    MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/large_n.py --n 20000 --steps 2 --love-rank 20 --test 500
    python benchmarks/large_n.py --quick                      # N = 3000, 1 step, seconds
    python benchmarks/large_n.py --device cuda --n 100000     # same code on a GPU

Memory is the resident set size sampled during each phase, minus its value at the start of the
phase. Run with ``MALLOC_MMAP_THRESHOLD_=131072`` (glibc) so that freed blocks go back to the
operating system at once and the peak is memory really live, not what the allocator kept.

The data are generated here: inputs uniform in [-1, 1]^d, targets a smooth function of a few
projections plus Gaussian noise (sd 0.1).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import sys
import threading
import time
from dataclasses import dataclass

import gpytorch
import torch

import gp_ntk


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class PeakMemory:
    """Samples the resident set size (CPU) or torch's allocator peak (CUDA) while active."""

    def __init__(self, device: torch.device, interval: float = 0.005) -> None:
        self.device, self.interval = device, interval
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
        else:
            self.baseline = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())

    @property
    def extra_bytes(self) -> int:
        return max(0, self.peak - self.baseline)


def make_data(n: int, d: int, dtype: torch.dtype, device: torch.device, seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64) * 2 - 1
    w = torch.randn(d, 3, generator=g, dtype=torch.float64) / math.sqrt(d)
    z = x @ w
    y = torch.sin(3 * z[:, 0]) + z[:, 1] * z[:, 2] + 0.5 * torch.relu(z[:, 0] + z[:, 2])
    y = y + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)


@dataclass
class Row:
    what: str
    seconds: float
    extra_mb: float
    note: str = ""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="training points")
    parser.add_argument("--test", type=int, default=1000, help="test points")
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--kernel", choices=("ntk", "nngp"), default="ntk")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--steps", type=int, default=3, help="Adam steps on the exact marginal likelihood")
    parser.add_argument(
        "--block-elements",
        type=int,
        default=None,
        help="kernel entries per block (default: gp_ntk's, 2**17 on a CPU, 2**24 on a GPU)",
    )
    parser.add_argument("--compile", choices=("auto", "always", "never"), default="auto")
    parser.add_argument(
        "--lazy",
        choices=("auto", "always", "never"),
        default="always",
        help="never: the dense path, for contrast",
    )
    parser.add_argument(
        "--love-rank",
        type=int,
        default=30,
        help="Lanczos rank of LOVE predictive variances (gpytorch default 100)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="N = 3000, 1 step, 200 test points")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.steps, args.test = 3000, 1, 200
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)

    x, y = make_data(args.n + args.test, args.dim, dtype, device, args.seed)
    train_x, train_y, test_x, test_y = x[: args.n], y[: args.n], x[args.n :], y[args.n :]
    y_mean, y_std = train_y.mean(), train_y.std()
    train_y = (train_y - y_mean) / y_std

    kernel = gp_ntk.models.make_kernel(args.kernel, depth=args.depth)
    model = gp_ntk.models.ExactGPModel(train_x, train_y, kernel=kernel).to(device)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    dense_mb = args.n**2 * torch.finfo(dtype).bits / 8 / 2**20
    block_elements = args.block_elements or gp_ntk.settings.block_evaluation.block_elements_for(device)

    print(
        f"exact GP, {args.kernel} relu depth {args.depth}, N = {args.n}, d = {args.dim}, {args.dtype}, "
        f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(
        f"max_cholesky_size = {gpytorch.settings.max_cholesky_size.value()} (CG/Lanczos above), "
        f"lazy = {args.lazy}, block = {block_elements} entries, compile = {args.compile}; "
        f"one dense N x N matrix: {dense_mb:.0f} MB",
        flush=True,
    )
    rows: list[Row] = []
    settings = (
        gp_ntk.settings.lazy_evaluation(args.lazy, block_elements=args.block_elements),
        gp_ntk.settings.compile_kernels(args.compile),
    )
    with settings[0], settings[1]:
        model.train()
        for step in range(args.steps):
            with PeakMemory(device) as memory:
                start = time.perf_counter()
                optimizer.zero_grad()
                loss = -mll(model(train_x), train_y)
                value = float(loss.detach())
                loss.backward()
                optimizer.step()
                sync(device)
                seconds = time.perf_counter() - start
            rows.append(
                Row(f"training step {step + 1}", seconds, memory.extra_bytes / 2**20, f"loss {value:.4f}")
            )
            print(f"  step {step + 1}/{args.steps}: {seconds:.1f} s, loss {value:.4f}", flush=True)

        model.eval()
        with (
            PeakMemory(device) as memory,
            torch.no_grad(),
            gpytorch.settings.fast_pred_var(),
            gpytorch.settings.max_root_decomposition_size(args.love_rank),
        ):
            start = time.perf_counter()
            pred = model.predict(test_x)
            sync(device)
            seconds = time.perf_counter() - start
        mean = pred.mean * y_std + y_mean
        sd = pred.variance.sqrt() * y_std
        rmse = float((mean - test_y).pow(2).mean().sqrt())
        coverage = float(((test_y - mean).abs() <= 1.959964 * sd).to(dtype).mean())
        rows.append(
            Row(
                f"predict {args.test} (mean + LOVE variances, rank {args.love_rank})",
                seconds,
                memory.extra_bytes / 2**20,
                f"RMSE {rmse:.4f} (y sd {float(y_std):.3f}), 95% coverage {coverage:.3f}",
            )
        )

    print()
    print(f"| phase | time [s] | peak extra memory [MB] | / dense N x N ({dense_mb:.0f} MB) | note |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r.what} | {r.seconds:.1f} | {r.extra_mb:.0f} | {r.extra_mb / dense_mb:.3f} | {r.note} |")
    threshold = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    print(
        f"\ncommand: {'MALLOC_MMAP_THRESHOLD_=' + threshold + ' ' if threshold else ''}python {' '.join(sys.argv)}"
    )


if __name__ == "__main__":
    main()
