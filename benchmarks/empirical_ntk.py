"""Empirical NTK: gp_ntk against the two methods of PyTorch's NTK tutorial (time, peak memory).

The baselines are the tutorial's two approaches, written here from their description:

* ``jacobian contraction``: per-sample Jacobians of both sides for all points at once
  (``vmap(jacrev)``), contracted per parameter with ``einsum``;
* ``NTK-vector products``: for every pair of points, ``vjp`` of one and ``jvp`` of the other
  against the output basis, ``vmap``-ed over both point sets.

Each case runs in a fresh subprocess; peak memory is that process's maximum resident set size
above its size before the computation (model and inputs built). A case whose estimated memory
exceeds ``--memory-limit-gb`` is not run and is reported as "would need X GB".

    python benchmarks/empirical_ntk.py            # MLP 784-1024-1024-10 and a CNN, N in {16, 64, 256, 1024}
    python benchmarks/empirical_ntk.py --quick    # tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("tutorial-jacobian", "tutorial-ntvp", "gp_ntk")


def build_model(name: str, width: int) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    if name == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, 10),
        ), (1, 28, 28)
    # conv 1->16->32 (3x3, max-pooling), read-out 1568->10: 20,490 parameters
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 49, 10),
    ), (1, 28, 28)


# ---------------------------------------------------------------------------------- baselines


def tutorial_jacobian(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor, mode: str) -> torch.Tensor:
    params = {k: v.detach() for k, v in model.named_parameters()}

    def single(p, x):
        return functional_call(model, p, (x.unsqueeze(0),)).squeeze(0)

    jac1 = vmap(jacrev(single), (None, 0))(params, x1)
    jac2 = vmap(jacrev(single), (None, 0))(params, x2)
    equation = "Naf,Maf->NM" if mode == "trace" else "Naf,Mbf->NMab"
    total = None
    for name in params:
        part = torch.einsum(equation, jac1[name].flatten(2), jac2[name].flatten(2))
        total = part if total is None else total + part
    return total / 10 if mode == "trace" else total


def tutorial_ntvp(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor, mode: str) -> torch.Tensor:
    params = {k: v.detach() for k, v in model.named_parameters()}

    def single(p, x):
        return functional_call(model, p, (x.unsqueeze(0),)).squeeze(0)

    def pair(a, b):
        out, pullback = vjp(lambda p: single(p, b), params)

        def column(v):
            (tangent,) = pullback(v)
            return jvp(lambda p: single(p, a), (params,), (tangent,))[1]

        return vmap(column)(torch.eye(out.numel(), dtype=out.dtype)).T

    full = vmap(vmap(pair, (None, 0)), (0, None))(x1, x2)
    return torch.diagonal(full, dim1=2, dim2=3).mean(-1) if mode == "trace" else full


def gp_ntk_method(model, x1, x2, mode):
    import gp_ntk

    return gp_ntk.empirical_ntk(model, x1, None if x2 is x1 else x2, mode=mode)


RUNNERS = {"tutorial-jacobian": tutorial_jacobian, "tutorial-ntvp": tutorial_ntvp, "gp_ntk": gp_ntk_method}


def estimate_bytes(method: str, model: nn.Module, n: int, mode: str) -> float:
    """What a method must hold at once (float32), from its algorithm, before running it."""
    num_params = sum(p.numel() for p in model.parameters())
    outputs = 10
    result = n * n * (outputs * outputs if mode == "full" else 1) * 4
    if method == "tutorial-jacobian":
        return 2 * n * outputs * num_params * 4 + result
    if method == "tutorial-ntvp":
        # the vmap over all n * n pairs batches the O parameter-space tangents of every pair
        return n * n * outputs * num_params * 4 + result
    import gp_ntk

    return gp_ntk.empirical.DEFAULT_MEMORY_BUDGET + 2 * result


# ---------------------------------------------------------------------------------- one case


def rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_case(model_name: str, method: str, n: int, mode: str, width: int) -> dict:
    torch.manual_seed(0)
    model, shape = build_model(model_name, width)
    x = torch.randn(n, *shape)
    run = RUNNERS[method]
    run(model, x[:2], x[:2], mode)  # one-time costs (vmap set-up, kernels) out of the timing
    base = current_rss()
    start = time.perf_counter()
    result = run(model, x, x, mode)
    elapsed = time.perf_counter() - start
    peak = max(0, rss_bytes() - base)
    return {"seconds": elapsed, "peak_bytes": peak, "checksum": float(result.double().sum()), "ok": True}


def spawn(model: str, method: str, n: int, mode: str, width: int, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    command = [
        sys.executable,
        __file__,
        "--case",
        f"{model},{method},{n},{mode},{width}",
        "--threads",
        str(threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        return {"ok": False, "note": f"failed: {tail[0][:80]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    parser.add_argument("--modes", nargs="+", default=["full", "trace"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--memory-limit-gb", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.case:
        model, method, n, mode, width = args.case.split(",")
        print(json.dumps(run_case(model, method, int(n), mode, int(width))))
        return []
    width = 64 if args.quick else 1024
    sizes = args.sizes or ([4, 8] if args.quick else [16, 64, 256, 1024])
    rows = []
    print(
        f"empirical NTK, float32, {args.threads} thread(s); MLP 784-{width}-{width}-10, CNN on 28x28 inputs"
    )
    header = f"{'model':<5} {'mode':<6} {'N':>5} {'method':<18} {'time (s)':>10} {'peak (GB)':>10}  note"
    print(header)
    print("-" * len(header))
    for model_name in args.models:
        model, _ = build_model(model_name, width)
        for mode in args.modes:
            for n in sizes:
                timings = {}
                for method in args.methods:
                    need = estimate_bytes(method, model, n, mode) / 2**30
                    if need > args.memory_limit_gb:
                        row = {"ok": False, "note": f"would need {need:.0f} GB, not run"}
                    else:
                        row = spawn(model_name, method, n, mode, width, args.threads)
                    row.update(model=model_name, mode=mode, n=n, method=method)
                    rows.append(row)
                    if row["ok"]:
                        timings[method] = row["seconds"]
                        note = ""
                        if method == "gp_ntk" and "tutorial-jacobian" in timings:
                            note = (
                                f"{timings['tutorial-jacobian'] / row['seconds']:.0f}x faster than jacobian"
                            )
                        print(
                            f"{model_name:<5} {mode:<6} {n:>5} {method:<18} {row['seconds']:>10.3f} "
                            f"{row['peak_bytes'] / 2**30:>10.3f}  {note}",
                            flush=True,
                        )
                    else:
                        print(
                            f"{model_name:<5} {mode:<6} {n:>5} {method:<18} {'-':>10} {'-':>10}  {row['note']}"
                        )
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
