"""The evaluation engine: kernel matrices in row blocks, lazily, and compiled.

* :mod:`~gp_ntk.engine.blocks`: row blocks, products and gradients over them, and
  :class:`~gp_ntk.engine.blocks.DenseKernel` (a dense kernel with block-level checkpointing);
* :mod:`~gp_ntk.engine.lazy`: :class:`~gp_ntk.engine.lazy.BlockedKernelLinearOperator`, a kernel
  matrix that is never materialised;
* :mod:`~gp_ntk.engine.compile`: compiled block evaluation.

The engine imports the operations, activations and recursion below it and the settings, never
the kernels: a kernel passes it functions of its own.
"""

from __future__ import annotations

from . import blocks, lazy
from .blocks import BlockFunction, DenseKernel, Side
from .compile import run_block
from .lazy import BlockedKernelLinearOperator

__all__ = [
    "BlockFunction",
    "BlockedKernelLinearOperator",
    "DenseKernel",
    "Side",
    "blocks",
    "lazy",
    "run_block",
]
