#!/usr/bin/env python
"""Dense kernel-evaluation benchmark: gp_ntk kernels vs BoTorch's IBNN kernel vs GPyTorch's RBF/Matern.

For every (kernel, dtype, N) configuration the script times ``kernel(x).to_dense()`` on a
random ``N x d`` input under ``torch.no_grad()`` (one warm-up evaluation, then the median of
``--repeats`` timed evaluations) and measures the peak extra memory of the evaluation.

Timing and memory come from separate worker processes (this script run with ``--worker``):

* timing worker: default allocator settings; warm-up, then ``--repeats`` timed evaluations;
* memory worker: one warm-up, then one evaluation whose peak is measured.

  - CPU: the process peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``)
    minus the baseline after imports, kernel construction, input creation and the warm-up.
    On Linux the peak counter is reset right before the measured evaluation
    (``/proc/self/clear_refs``), so the baseline is the resident size at that moment rather
    than an earlier peak (e.g. during imports); elsewhere the baseline is the peak so far,
    taken before the warm-up. With glibc the memory worker serves every allocation of
    128 KiB or more by its own ``mmap`` from process start (``mallopt(M_MMAP_THRESHOLD)``),
    so freed tensors go back to the OS at once and the peak is the memory really live at
    the same time. (With the default settings glibc keeps and re-uses freed blocks below
    its dynamic threshold of up to 32 MiB, and the RSS peak of the same evaluation varies
    between about 8 and 17 N x N matrices with the allocation history; that peak, taken
    over the timed repeats, is kept in the ``--json`` output as
    ``peak_bytes_default_allocator``.)
  - CUDA: ``torch.cuda.max_memory_allocated()`` minus ``torch.cuda.memory_allocated()`` at
    the baseline, after ``torch.cuda.reset_peak_memory_stats()``.

The last column divides the peak by the size of one ``N x N`` matrix of the dtype (the
result itself is one such matrix).

Isolation (``--isolation``): ``config`` (default) starts fresh timing and memory workers for
every (kernel, N, dtype) configuration, so nothing of an earlier configuration can hide in a
peak or disturb a timing; ``kernel`` starts one pair per kernel, ``none`` one pair for the
whole run (used by ``--quick``). Both are exact for memory where the peak counter can be
reset (Linux, CUDA); the script says so otherwise.

Examples::

    python benchmarks/kernel_eval.py                      # full run (N = 1000 ... 8000)
    python benchmarks/kernel_eval.py --quick              # smoke run, well under a minute
    python benchmarks/kernel_eval.py --sizes 1000 2000 --dtypes float32 --kernels rbf nngp-relu
    python benchmarks/kernel_eval.py --device cuda
    python benchmarks/kernel_eval.py --json results.json   # also keep every timing
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------------------------
# Kernel registry (imports of gpytorch / botorch / gp_ntk happen only inside the workers)
# --------------------------------------------------------------------------------------------

WEIGHT_VARIANCE = 2.0
BIAS_VARIANCE = 0.1


def _make_nngp_relu(depth: int):
    import gp_ntk

    return gp_ntk.NNGPKernel(
        depth=depth, activation="relu", weight_variance=WEIGHT_VARIANCE, bias_variance=BIAS_VARIANCE
    )


def _make_ntk_relu(depth: int):
    import gp_ntk

    return gp_ntk.NTKKernel(
        depth=depth, activation="relu", weight_variance=WEIGHT_VARIANCE, bias_variance=BIAS_VARIANCE
    )


def _make_nngp_ntk_relu(depth: int):
    # evaluated with ``nngp_and_ntk``: both matrices from one pass (see ``_run_one``)
    return _make_ntk_relu(depth)


def _make_nngp_erf(depth: int):
    import gp_ntk

    return gp_ntk.NNGPKernel(depth=depth, activation="erf")


def _make_ibnn(depth: int):
    from botorch.models.kernels import InfiniteWidthBNNKernel

    kernel = InfiniteWidthBNNKernel(depth=depth)
    # Same variances as the gp_ntk ReLU kernels (the cost does not depend on the values).
    kernel.weight_var = WEIGHT_VARIANCE
    kernel.bias_var = BIAS_VARIANCE
    return kernel


def _make_rbf(depth: int):
    from gpytorch.kernels import RBFKernel

    return RBFKernel()


def _make_matern(depth: int):
    from gpytorch.kernels import MaternKernel

    return MaternKernel(nu=2.5)


# key -> (table label, factory(depth)). gp_ntk keys ending in "-eager" / "-compiled" force
# ``gp_ntk.settings.compile_kernels("never" / "always")``; the others use the library default
# ("auto": compiled blocks from 2**24 entries, i.e. N >= 4096, eager below).
KERNELS: dict[str, tuple[str, Any]] = {
    "nngp-relu": ("gp_ntk NNGP relu", _make_nngp_relu),
    "nngp-relu-eager": ("gp_ntk NNGP relu, eager", _make_nngp_relu),
    "nngp-relu-compiled": ("gp_ntk NNGP relu, compiled", _make_nngp_relu),
    "ntk-relu": ("gp_ntk NTK relu", _make_ntk_relu),
    "nngp+ntk-relu": ("gp_ntk NNGP+NTK relu", _make_nngp_ntk_relu),
    "nngp+ntk-relu-eager": ("gp_ntk NNGP+NTK relu, eager", _make_nngp_ntk_relu),
    "nngp+ntk-relu-compiled": ("gp_ntk NNGP+NTK relu, compiled", _make_nngp_ntk_relu),
    "nngp-erf": ("gp_ntk NNGP erf", _make_nngp_erf),
    "ibnn": ("botorch IBNN (relu)", _make_ibnn),
    "rbf": ("gpytorch RBF", _make_rbf),
    "matern52": ("gpytorch Matern 5/2", _make_matern),
}
REFERENCE = "rbf"
SECOND_REFERENCE = "ibnn"
DEFAULT_KERNELS = [
    "nngp-relu",
    "nngp-relu-eager",
    "nngp+ntk-relu",
    "nngp+ntk-relu-eager",
    "nngp-erf",
    "ibnn",
    "rbf",
    "matern52",
]

FULL_SIZES = [1000, 2000, 4000, 8000]
QUICK_SIZES = [500, 1000]
ITEMSIZE = {"float64": 8, "float32": 4}
MB = 1e6  # bytes


# --------------------------------------------------------------------------------------------
# Memory helpers (worker side)
# --------------------------------------------------------------------------------------------


def _maxrss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024


def _current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _release_freed_memory() -> None:
    """Return memory freed earlier to the OS (glibc ``malloc_trim``), so the baseline is clean."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


MMAP_THRESHOLD = 128 * 1024  # bytes; glibc's initial default


def _set_mmap_threshold(nbytes: int) -> bool:
    """Serve every allocation >= ``nbytes`` by its own mmap, returned to the OS on free (glibc)."""
    libc = _libc()
    return bool(libc is not None and hasattr(libc, "mallopt") and libc.mallopt(_M_MMAP_THRESHOLD, nbytes))


def _reset_peak_rss() -> bool:
    """Reset the peak-RSS counter to the current RSS (Linux >= 4.0). Returns True on success."""
    try:
        before = _current_rss_bytes()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    if before is None:
        return False
    # Check that ru_maxrss really followed the reset (it is also fed by exited threads).
    return _maxrss_bytes() <= max(before, _current_rss_bytes() or 0) + 8 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# Worker
# --------------------------------------------------------------------------------------------


def _run_one(torch, kernel_key: str, n: int, dtype_name: str, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    dtype = getattr(torch, dtype_name)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    torch.manual_seed(args.seed)
    kernel = KERNELS[kernel_key][1](args.depth).to(device=device, dtype=dtype).eval()
    x = torch.randn(n, args.dim, device=device, dtype=dtype)

    both_outputs = kernel_key.startswith("nngp+ntk")
    mode = (
        "never" if kernel_key.endswith("-eager") else "always" if kernel_key.endswith("-compiled") else None
    )

    def evaluate():
        import contextlib

        import gp_ntk

        setting = gp_ntk.settings.compile_kernels(mode) if mode else contextlib.nullcontext()
        with torch.no_grad(), setting:
            out = kernel.nngp_and_ntk(x, x) if both_outputs else (kernel(x).to_dense(),)
        sync()
        return out

    def start_peak(fallback: int) -> tuple[int, bool]:
        """Collect garbage and reset the peak counter; return (baseline bytes, whether reset)."""
        gc.collect()
        sync()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            return torch.cuda.memory_allocated(device), True
        _release_freed_memory()
        reset = _reset_peak_rss()
        current = _current_rss_bytes()
        return (current if reset and current is not None else fallback), reset

    def peak_since(baseline: int) -> int:
        sync()
        peak = torch.cuda.max_memory_allocated(device) if cuda else _maxrss_bytes()
        return max(0, peak - baseline)

    gc.collect()
    # Without a resettable peak counter: the peak so far (imports, kernel, input) is the baseline.
    fallback = 0 if cuda else _maxrss_bytes()

    # Warm-up: lazy initialisation (thread pools, library buffers, ...) is neither timed nor,
    # where the peak counter can be reset, counted.
    out = evaluate()
    del out
    baseline, peak_reset = start_peak(fallback)

    result: dict[str, Any] = {"kernel": kernel_key, "dtype": dtype_name, "n": n, "peak_reset": peak_reset}
    out = None
    if args.phase == "time":
        times = []
        for _ in range(args.repeats):
            out = None  # free the previous result before the next evaluation
            sync()
            t0 = time.perf_counter()
            out = evaluate()
            times.append(time.perf_counter() - t0)
        result.update(times=times, time=statistics.median(times), min_time=min(times))
        result["peak_bytes_default_allocator"] = peak_since(baseline)
    else:
        out = evaluate()
        result["peak_bytes"] = peak_since(baseline)
        result["allocator"] = "cuda" if cuda else args.allocator

    for matrix in out:
        if tuple(matrix.shape) != (n, n) or matrix.dtype != dtype:
            raise RuntimeError(f"unexpected output {tuple(matrix.shape)} {matrix.dtype}")
    result["finite"] = all(bool(torch.isfinite(matrix).all()) for matrix in out)
    result["num_outputs"] = len(out)
    return result


def worker_main(args: argparse.Namespace) -> None:
    args.allocator = "default"
    if args.phase == "memory" and _set_mmap_threshold(MMAP_THRESHOLD):
        # Before torch is imported, i.e. before any large allocation: nothing above the
        # threshold ever lives in glibc's heap, whatever ran earlier in this process.
        args.allocator = f"mmap >= {MMAP_THRESHOLD // 1024} KiB"

    import torch

    torch.set_num_threads(args.threads)
    # import everything the kernels need before taking any memory baseline
    import gpytorch  # noqa: F401

    import gp_ntk  # noqa: F401

    if "ibnn" in args.kernels:
        import botorch.models.kernels  # noqa: F401

    for kernel_key in args.kernels:
        for dtype_name in args.dtypes:
            for n in sorted(args.sizes):
                try:
                    res = _run_one(torch, kernel_key, n, dtype_name, args)
                except Exception as e:  # report and continue with the next configuration
                    res = {"kernel": kernel_key, "dtype": dtype_name, "n": n, "error": repr(e)[:300]}
                print("RESULT " + json.dumps(res), flush=True)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


@dataclass
class Job:
    kernels: list[str]
    dtypes: list[str]
    sizes: list[int]

    def keys(self) -> list[tuple[str, str, int]]:
        return [(k, dt, n) for k in self.kernels for dt in self.dtypes for n in self.sizes]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.check_output(["sysctl", "-n", "machdep.cpu.brand_string"], text=True).strip()
        except (OSError, subprocess.CalledProcessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def _gp_ntk_source() -> str:
    """Where gp_ntk comes from: git commit (if any) and a hash of its .py files."""
    import hashlib

    import gp_ntk

    root = os.path.dirname(os.path.abspath(gp_ntk.__file__))
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                digest.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
    info = f"sources sha256 {digest.hexdigest()[:12]}"
    try:
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        if commit:
            info = f"git {commit}{' + uncommitted changes' if dirty else ''}, {info}"
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _header(args: argparse.Namespace, source: str) -> list[str]:
    import gpytorch
    import torch

    import gp_ntk

    try:
        import botorch

        botorch_version = botorch.__version__
    except ImportError:
        botorch_version = "not installed"
    lines = [
        f"date: {_dt.datetime.now().isoformat(timespec='seconds')}",
        f"python {platform.python_version()} | torch {torch.__version__} | gpytorch {gpytorch.__version__}"
        f" | botorch {botorch_version} | gp_ntk {gp_ntk.__version__}",
        f"gp_ntk: {source}",
        f"platform: {platform.platform()}",
        f"CPU: {_cpu_model()} ({os.cpu_count()} logical cores) | torch threads: {args.threads}"
        + (f" | load average at start: {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""),
    ]
    if args.device.startswith("cuda"):
        lines.append(f"GPU: {torch.cuda.get_device_name(torch.device(args.device))}")
    lines.append(
        f"device: {args.device} | d = {args.dim} | depth = {args.depth} | sizes = {args.sizes}"
        f" | dtypes = {args.dtypes} | warm-up 1 + median of {args.repeats} | isolation: {args.isolation}"
    )
    return lines


def _worker_cmd(args: argparse.Namespace, job: Job, phase: str) -> list[str]:
    return [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        "--kernels",
        *job.kernels,
        "--dtypes",
        *job.dtypes,
        "--sizes",
        *map(str, job.sizes),
        "--dim",
        str(args.dim),
        "--depth",
        str(args.depth),
        "--repeats",
        str(args.repeats),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
        "--phase",
        phase,
    ]


def _run_worker(args: argparse.Namespace, job: Job, phase: str) -> dict[tuple, dict]:
    proc = subprocess.run(_worker_cmd(args, job, phase), capture_output=True, text=True)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT ") :])
            results[(r["kernel"], r["dtype"], r["n"])] = r
    for key in job.keys():  # configurations the worker never reported (crash, OOM kill, ...)
        if key not in results:
            err = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            results[key] = {"error": f"{phase} worker failed: {err}"}
    return results


def _run_job(args: argparse.Namespace, job: Job) -> list[dict]:
    """Timing worker, then memory worker; one merged record per configuration."""
    timing = _run_worker(args, job, "time")
    memory = _run_worker(args, job, "memory")
    merged = []
    for key in job.keys():
        t, m = timing[key], memory[key]
        r = {"kernel": key[0], "dtype": key[1], "n": key[2]}
        errors = [e for e in (t.get("error"), m.get("error")) if e]
        if errors:
            r["error"] = "; ".join(errors)
        for src in (t, m):
            for name, value in src.items():
                if name not in ("error", "kernel", "dtype", "n", "finite", "peak_reset"):
                    r[name] = value
        r["finite"] = t.get("finite", True) and m.get("finite", True)
        r["peak_reset"] = m.get("peak_reset", True)
        merged.append(r)
    return merged


def _fmt_time(t: float) -> str:
    return f"{t:.4f}" if t < 1 else f"{t:.3f}" if t < 10 else f"{t:.2f}"


def _table(results: list[dict], args: argparse.Namespace) -> list[str]:
    by_key = {(r["kernel"], r["dtype"], r["n"]): r for r in results}
    headers = [
        "kernel",
        "dtype",
        "N",
        "time [s]",
        f"time / {KERNELS[REFERENCE][0].split()[-1]}",
        "IBNN time / time",
        "peak extra memory [MB]",
        "peak / (N x N matrix)",
    ]
    rows = []
    for dt in args.dtypes:
        for n in args.sizes:
            for k in args.kernels:
                r = by_key.get((k, dt, n))
                label = KERNELS[k][0]
                if r is None or "error" in r:
                    rows.append([label, dt, str(n), "failed", "", "", "", ""])
                    continue
                ref = by_key.get((REFERENCE, dt, n))
                ratio = f"{r['time'] / ref['time']:.2f}" if ref and "error" not in ref else "n/a"
                ibnn = by_key.get((SECOND_REFERENCE, dt, n))
                speedup = f"{ibnn['time'] / r['time']:.1f}" if ibnn and "error" not in ibnn else "n/a"
                matrix_bytes = n * n * ITEMSIZE[dt]
                mem = r["peak_bytes"]
                rows.append(
                    [
                        label,
                        dt,
                        str(n),
                        _fmt_time(r["time"]) + ("" if r.get("finite", True) else " (non-finite!)"),
                        ratio,
                        speedup,
                        f"{mem / MB:.1f}",
                        f"{mem / matrix_bytes:.2f}",
                    ]
                )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    right = [False, False, True, True, True, True, True, True]

    def fmt(cells: list[str]) -> str:
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)]
        return "| " + " | ".join(parts) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if r else ("-" * (w + 2)) for w, r in zip(widths, right)) + "|"
    return [fmt(headers), sep, *(fmt(row) for row in rows)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=None, help=f"N values (default {FULL_SIZES})")
    p.add_argument("--dim", type=int, default=32, help="input dimension d (default 32)")
    p.add_argument("--depth", type=int, default=3, help="network depth of the NN kernels (default 3)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats after one warm-up (default 5)")
    p.add_argument(
        "--dtypes",
        nargs="+",
        choices=sorted(ITEMSIZE),
        default=["float64", "float32"],
        help="(default: both)",
    )
    p.add_argument(
        "--kernels",
        nargs="+",
        choices=list(KERNELS),
        default=DEFAULT_KERNELS,
        help=f"kernels to benchmark (default: {' '.join(DEFAULT_KERNELS)}; time ratios need 'rbf' and 'ibnn')",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--isolation",
        choices=["config", "kernel", "none"],
        default=None,
        help="fresh timing and memory workers per (kernel, N, dtype) configuration, per kernel, "
        "or one pair for the whole run (default: config; none with --quick)",
    )
    p.add_argument("--quick", action="store_true", help=f"smoke run: N = {QUICK_SIZES}, 1 repeat")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the raw results as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--phase", choices=["time", "memory"], default="time", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.sizes is None:
        args.sizes = QUICK_SIZES if args.quick else FULL_SIZES
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.isolation is None:
        args.isolation = "none" if args.quick else "config"
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    args.sizes = sorted(set(args.sizes))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker_main(args)
        return

    import torch

    if args.threads is None:
        args.threads = torch.get_num_threads()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda requested but CUDA is not available")

    source = _gp_ntk_source()
    header = _header(args, source)
    for line in header:
        print(line)
    print(flush=True)

    if args.isolation == "config":
        jobs = [Job([k], [dt], [n]) for dt in args.dtypes for n in args.sizes for k in args.kernels]
    elif args.isolation == "kernel":
        jobs = [Job([k], list(args.dtypes), list(args.sizes)) for k in args.kernels]
    else:
        jobs = [Job(list(args.kernels), list(args.dtypes), list(args.sizes))]

    results: list[dict] = []
    t_start = time.perf_counter()
    for i, job in enumerate(jobs, 1):
        job_results = _run_job(args, job)
        results.extend(job_results)
        for r in job_results:
            status = f"{r['time']:.4f} s, {r['peak_bytes'] / MB:.1f} MB" if "error" not in r else r["error"]
            print(
                f"[{i}/{len(jobs)} {time.perf_counter() - t_start:6.1f}s] "
                f"{r['kernel']:<9} {r['dtype']:<7} N={r['n']:<6} {status}",
                file=sys.stderr,
                flush=True,
            )

    print("\n".join(_table(results, args)))
    allocators = sorted({r["allocator"] for r in results if "allocator" in r})
    print(
        f"\ntime: median of {args.repeats} after one warm-up; ratio to {KERNELS[REFERENCE][0]} at the same"
        f" N and dtype. peak: extra memory of one evaluation over the baseline after the warm-up"
        f" ({'CUDA allocated bytes' if args.device.startswith('cuda') else 'RSS'};"
        f" allocator: {', '.join(allocators) or 'n/a'}); it includes the result, which is two"
        " N x N matrices for the NNGP+NTK rows. eager / compiled: gp_ntk.settings.compile_kernels"
        " forced to 'never' / 'always'; other gp_ntk rows use the default ('auto': compiled from"
        " N x N >= 2**24)."
    )
    if hasattr(os, "getloadavg"):
        load = os.getloadavg()
        print(
            f"load average at the end (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
            f" on {os.cpu_count()} logical cores; run took {time.perf_counter() - t_start:.0f} s"
        )
    source_after = _gp_ntk_source()
    if source_after != source:
        print(f"WARNING: gp_ntk changed during the run (now: {source_after}); results may mix versions.")
    without_reset = [r for r in results if "error" not in r and not r.get("peak_reset", True)]
    if without_reset and args.isolation != "config":
        print(
            f"note: the peak-RSS counter could not be reset on this platform; with --isolation {args.isolation}"
            " the memory of a configuration can hide behind an earlier one's peak. Use --isolation config."
        )
    failed = [r for r in results if "error" in r]
    if failed:
        print("\nfailed configurations:")
        for r in failed:
            print(f"  {r['kernel']} {r['dtype']} N={r['n']}: {r['error']}")
    if args.json:
        with open(args.json, "w") as f:
            options = {k: v for k, v in vars(args).items() if k not in ("worker", "phase")}
            json.dump({"header": header, "args": options, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
