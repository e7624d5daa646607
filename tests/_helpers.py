"""Shared builders for the kernel tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import torch
from torch.func import functional_call

import gp_ntk

# name -> factory(bias_variance, **kwargs); every public kernel class and a spread of activations
KERNELS = {
    "nngp-relu": lambda b, **kw: gp_ntk.NNGPKernel(3, "relu", 2.0, b, **kw),
    "ntk-relu": lambda b, **kw: gp_ntk.NTKKernel(3, "relu", 2.0, b, **kw),
    "nngp-erf": lambda b, **kw: gp_ntk.NNGPKernel(2, "erf", 1.5, b, **kw),
    "ntk-erf": lambda b, **kw: gp_ntk.NTKKernel(2, "erf", 1.5, b, **kw),
    "ntk-gelu": lambda b, **kw: gp_ntk.NTKKernel(2, "gelu", 1.5, b, **kw),
    "ntk-abs": lambda b, **kw: gp_ntk.NTKKernel(2, "abs", 1.0, b, **kw),
    "ntk-step": lambda b, **kw: gp_ntk.NTKKernel(2, "step", 1.0, b, **kw),
    "ntk-leaky": lambda b, **kw: gp_ntk.NTKKernel(2, gp_ntk.LeakyReLU(0.1), 2.0, b, **kw),
    "ntk-arccos2": lambda b, **kw: gp_ntk.NTKKernel(2, gp_ntk.ArcCos(2), 1.0, b, **kw),
    "ntk-sin": lambda b, **kw: gp_ntk.NTKKernel(2, "sin", 1.0, b, **kw),
    "nngp-cos": lambda b, **kw: gp_ntk.NNGPKernel(2, "cos", 1.0, b, **kw),
    "ntk-identity": lambda b, **kw: gp_ntk.NTKKernel(2, "identity", 1.0, b, **kw),
    "ntk-tanh-quad": lambda b, **kw: gp_ntk.NTKKernel(
        1, gp_ntk.Numerical(torch.tanh, degree=12), 1.0, b, **kw
    ),
    "arccos0": lambda b, **kw: gp_ntk.ArcCosineKernel(0, 2, 1.0, b, **kw),
    "arccos1": lambda b, **kw: gp_ntk.ArcCosineKernel(1, 2, 1.0, b, **kw),
    "arccos2": lambda b, **kw: gp_ntk.ArcCosineKernel(2, 1, 1.0, b, **kw),
    "erf-williams": lambda b, **kw: gp_ntk.ErfKernel(1.0, b, **kw),
}


def singular_inputs(dtype: torch.dtype, zero_row: bool = True) -> torch.Tensor:
    """Rows at every cos(theta) = +-1 case: duplicate, parallel, anti-parallel, and a zero row."""
    g = torch.Generator().manual_seed(7)
    a = torch.randn(4, generator=g, dtype=torch.float64)
    rows = [a, a.clone(), 2.5 * a, -a, torch.randn(4, generator=g, dtype=torch.float64)]
    if zero_row:
        rows.append(torch.zeros(4, dtype=torch.float64))
    return torch.stack(rows).to(dtype)


class _Dense(torch.nn.Module):
    """k(x, x) through ``forward`` (``__call__`` of a kernel returns a lazy tensor)."""

    def __init__(self, kernel):
        super().__init__()
        self.kernel = kernel

    def forward(self, x):
        return self.kernel.forward(x, x)


def kernel_function(kernel):
    """(x, *raw_params) -> dense k(x, x), for gradcheck over inputs and hyperparameters."""
    module = _Dense(kernel)
    names = [name for name, _ in module.named_parameters()]

    def fn(x, *raw):
        return functional_call(module, dict(zip(names, raw)), (x,))

    params = [p.detach().clone().requires_grad_(True) for _, p in module.named_parameters()]
    return fn, params


def break_compiler(monkeypatch) -> None:
    """Make every ``torch.compile`` of a kernel block fail, as on a machine without a compiler."""
    from gp_ntk.engine import compile as compile_module

    def broken():
        def fail(*args, **kwargs):
            raise RuntimeError("no compiler here (test)")

        return fail

    monkeypatch.setattr(compile_module, "_compiled_block_outputs", broken)
    monkeypatch.setattr(gp_ntk.settings.compile_kernels, "_broken", False)


# a Python with neural-tangents (JAX) installed; the comparison tests skip without one
NT_PYTHON = Path(os.environ.get("GP_NTK_NT_PYTHON", "python-with-neural-tangents"))


def neural_tangents_available() -> bool:
    """Whether ``NT_PYTHON`` exists and imports neural_tangents."""
    if not NT_PYTHON.exists():
        return False
    probe = subprocess.run([str(NT_PYTHON), "-c", "import neural_tangents"], capture_output=True, timeout=300)
    return probe.returncode == 0
