"""Switches used as context managers or set for a whole program.

Each setting has a **process-wide default**, changed by its ``set(...)`` class method, and
**per-thread overrides**, made by entering an instance as a context manager. Inside a ``with``
block the thread that entered it sees the block's values; every other thread keeps seeing
its own overrides or, outside any block, the process-wide default. A new thread starts from
the process-wide default, not from the overrides of the thread that started it. ``set`` changes the
process-wide default only: inside a ``with`` block the block's values still win in that thread
until it exits, and the exit leaves the new default in place.

The settings are GPyTorch settings: :class:`check_finite` is a ``gpytorch.settings._feature_flag``
(``on()``, ``off()``, ``is_default()``), the others are ``gpytorch.settings._value_context``
(``value()``, the tuple of values in force). They differ from GPyTorch's in where the values
live: GPyTorch keeps one process-wide value that a ``with`` block overwrites for every thread;
here a block's values are the entering thread's alone, so a block in one thread never changes
what a kernel evaluated in another thread does.

The context managers nest and are re-entrant: one object may be entered several times (also
inside itself, and from several threads at once), and every exit restores the values that
were in force at the matching entry. Values given as ``None`` take the values in force at
entry.

Example::

    with gp_ntk.settings.check_finite(False):
        K = kernel(x).to_dense()  # unchecked in this thread only
    gp_ntk.settings.check_finite.set(False)  # for the whole program, every thread
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import gpytorch
from gpytorch.settings import _feature_flag, _value_context

__all__ = ["block_evaluation", "check_finite", "cholesky_jitter", "compile_kernels", "lazy_evaluation"]

# The jitter policy of every gp_ntk routine that factorises a kernel matrix: GPyTorch's own
# defaults (1e-6 in float32, 1e-8 in float64) scaled up together on each retry.
JITTER_FLOAT = 1e-6
JITTER_DOUBLE = 1e-8


def cholesky_jitter(scale: float = 1.0) -> gpytorch.settings.cholesky_jitter:
    r"""GPyTorch's ``cholesky_jitter`` at ``scale`` times gp_ntk's base jitter.

    The one jitter policy of gp_ntk: a fit that fails to factorise a kernel matrix
    (:func:`gp_ntk.fit`, :func:`gp_ntk.bo.fit_bo_model`, :func:`gp_ntk.bo.run_bo`) retries
    under :math:`s \cdot 10^{-8}` added to the diagonal in float64 and :math:`s \cdot 10^{-6}`
    in float32 (GPyTorch's defaults at :math:`s = 1`), with :math:`s` growing by a constant
    factor per retry; a model fitted under a larger jitter is queried under the same one.

    >>> import torch
    >>> with cholesky_jitter(100.0):
    ...     gpytorch.settings.cholesky_jitter.value(torch.float64)
    1e-06
    """
    if (
        isinstance(scale, bool)
        or not isinstance(scale, int | float)
        or not scale > 0
        or scale == float("inf")
    ):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    return gpytorch.settings.cholesky_jitter(
        float_value=JITTER_FLOAT * scale, double_value=JITTER_DOUBLE * scale
    )


class _Overrides(threading.local):
    # a class attribute of a threading.local subclass is every thread's starting value, so
    # reading it never raises (getattr with a default would, at a cost, in every new thread)
    values: tuple | None = None


class _Setting:
    """A tuple of values: process-wide defaults (class attributes) and per-thread overrides.

    ``_FIELDS`` names the class attributes holding the defaults. ``_local.values`` is the
    current thread's override (a tuple in ``_FIELDS`` order) or None. Every entry of an
    object pushes the override it replaces on a stack of that object and thread; every exit
    pops it back.
    """

    _FIELDS: ClassVar[tuple[str, ...]] = ()
    _local: ClassVar[_Overrides]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # one store per setting (a class naming its fields); subclasses of a setting share their
        # parent's, and the abstract bases in between have none
        if cls.__dict__.get("_FIELDS") and "_local" not in cls.__dict__:
            cls._local = _Overrides()

    @classmethod
    def _values(cls) -> tuple:
        values = cls._local.values
        if values is None:
            return tuple(getattr(cls, name) for name in cls._FIELDS)
        return values

    def _resolve(self, current: tuple) -> tuple:
        """The values this object sets, given those in force at entry."""
        raise NotImplementedError

    def _stack(self) -> list:
        stacks = self.__dict__.get("_stacks")
        if stacks is None:
            stacks = self.__dict__.setdefault("_stacks", threading.local())
        stack = getattr(stacks, "stack", None)
        if stack is None:
            stack = stacks.stack = []
        return stack

    def __enter__(self):
        cls = type(self)
        previous = cls._local.values
        self._stack().append(previous)
        cls._local.values = self._resolve(cls._values())
        return self

    def __exit__(self, *exc: Any) -> None:
        stack = self._stack()
        if not stack:
            raise RuntimeError(f"{type(self).__name__} exited more often than it was entered in this thread")
        type(self)._local.values = stack.pop()


class _ValueSetting(_Setting, _value_context):
    """A setting of several values, read as one tuple by GPyTorch's ``value()``."""

    @classmethod
    def value(cls) -> tuple:
        """The values in force in this thread, in ``_FIELDS`` order."""
        return cls._values()

    @classmethod
    def _set_value(cls, value: tuple) -> None:
        # GPyTorch's process-wide setter; values are checked as set() checks them
        cls.set(*value)


class check_finite(_Setting, _feature_flag):
    """Refuse inputs with NaN/inf entries (on by default).

    The scan costs O(n d) per kernel call, negligible next to the O(n m d) kernel, but on a
    GPU it synchronises the device. Switched off, a non-finite entry in row i of ``x1``
    (or ``x2``) makes row i (column i) of the kernel matrix non-finite and leaves every other
    entry as it would be.

    ``with check_finite(False):`` switches checking off in the current thread only (see
    :mod:`gp_ntk.settings`); ``check_finite.set(False)`` switches it off for every thread.

    Example:
        >>> import torch, gp_ntk
        >>> kernel, x = gp_ntk.NNGPKernel(depth=2), torch.randn(4, 3)
        >>> x[0, 0] = float("nan")
        >>> with gp_ntk.settings.check_finite(False):
        ...     K = kernel(x).to_dense()
        >>> bool(K[1:, 1:].isfinite().all()), bool(K[0].isnan().all())
        (True, True)

    ``gp_ntk.settings.check_finite.set(False)`` switches it off for the rest of the program.
    """

    _FIELDS = ("_state",)
    _default = True
    _state: bool = True

    def __init__(self, state: bool = True) -> None:
        self.state = bool(state)

    def _resolve(self, current: tuple) -> tuple:
        return (self.state,)

    @classmethod
    def on(cls) -> bool:
        values = cls._local.values
        return cls._state if values is None else values[0]

    @classmethod
    def set(cls, state: bool) -> None:
        cls._state = bool(state)

    @classmethod
    def is_default(cls) -> bool:
        return cls.on() == cls._default

    @classmethod
    def _set_state(cls, state: bool) -> None:
        cls.set(state)


class block_evaluation(_ValueSetting):
    """How dense kernel matrices are evaluated: in row blocks, or in one piece.

    A deep-kernel layer is a dozen elementwise maps. On whole N x M temporaries each map is a
    round trip through main memory; on blocks of about ``block_elements`` entries the
    temporaries stay in cache (measured: 3-5x faster per layer on CPU, docs/benchmarks.md). A
    matrix ``k(X, X)`` is then also built from the blocks on and above its diagonal only.

    Matrices with at least ``min_elements`` entries (default 2**18, about 512 x 512) are
    evaluated in blocks through :class:`gp_ntk.engine.blocks.DenseKernel`, whose backward pass
    recomputes each block instead of keeping a graph of N x M temporaries: the memory of a
    differentiable evaluation is its result plus one block. Those matrices are differentiable
    once (enough for marginal likelihoods and acquisition gradients); smaller ones are
    evaluated in one piece and are differentiable any number of times.

    ``block_elements=None`` picks 2**17 entries on a CPU (a float64 block of 1 MB,
    cache-sized) and 2**24 on a GPU, where blocks must be large to keep the device busy.
    Arguments left out keep the values in force where the block is entered. As a context
    manager it applies to the current thread (see :mod:`gp_ntk.settings`).

    Example:
        >>> import torch, gp_ntk
        >>> kernel, x = gp_ntk.NTKKernel(depth=3), torch.randn(300, 5)
        >>> with gp_ntk.settings.block_evaluation(min_elements=0, block_elements=2**12):
        ...     K = kernel(x).to_dense()
        >>> K.shape
        torch.Size([300, 300])
    """

    _FIELDS = ("_min_elements", "_block_elements")
    _min_elements: int = 2**18
    _block_elements: int | None = None
    _CPU_BLOCK = 2**17
    _GPU_BLOCK = 2**24

    def __init__(self, min_elements: int | None = None, block_elements: int | None = None) -> None:
        self._check(min_elements, block_elements)
        self.min_elements = None if min_elements is None else int(min_elements)
        self.block_elements = block_elements

    @staticmethod
    def _check(min_elements, block_elements) -> None:
        if min_elements is not None and (
            isinstance(min_elements, bool) or not isinstance(min_elements, int) or min_elements < 0
        ):
            raise ValueError(f"min_elements must be a non-negative integer, got {min_elements!r}")
        if block_elements is not None and (
            isinstance(block_elements, bool) or not isinstance(block_elements, int) or block_elements < 1
        ):
            raise ValueError(f"block_elements must be a positive integer or None, got {block_elements!r}")

    def _resolve(self, current: tuple) -> tuple:
        return (
            current[0] if self.min_elements is None else self.min_elements,
            current[1] if self.block_elements is None else self.block_elements,
        )

    @classmethod
    def set(cls, min_elements: int | None = None, block_elements: int | None = None) -> None:
        cls._check(min_elements, block_elements)
        if min_elements is not None:
            cls._min_elements = int(min_elements)
        if block_elements is not None:
            cls._block_elements = block_elements

    @classmethod
    def applies(cls, num_elements: int) -> bool:
        values = cls._local.values
        min_elements = cls._min_elements if values is None else values[0]
        return num_elements >= min_elements

    @classmethod
    def block_elements_for(cls, device) -> int:
        values = cls._local.values
        block_elements = cls._block_elements if values is None else values[1]
        if block_elements is not None:
            return block_elements
        return cls._CPU_BLOCK if getattr(device, "type", "cpu") == "cpu" else cls._GPU_BLOCK


_MODES = ("auto", "always", "never")


def _check_mode(mode: Any) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")


class lazy_evaluation(_ValueSetting):
    """When a kernel returns a blocked, never-materialised operator instead of a dense matrix.

    ``"auto"`` (default): lazily once a full matrix ``k(X1, X2)`` would exceed
    ``min_elements`` entries (2**24 = 16.8 M, 134 MB in float64); ``"always"``; ``"never"``.
    ``lazy_evaluation()`` with no argument is ``"auto"``. The operator
    (:class:`gp_ntk.engine.lazy.BlockedKernelLinearOperator`) evaluates ``block_elements`` entries at
    a time for matrix products and hyperparameter gradients, so CG/Lanczos inference
    (GPyTorch's path above ``max_cholesky_size``) needs memory linear in N. ``block_elements``
    defaults to :class:`block_evaluation`'s block size. Where GPyTorch asks for the dense
    matrix (the Cholesky path) the operator builds it once, exactly as the dense path would.
    ``min_elements`` and ``block_elements`` left out keep the values in force where the block
    is entered. As a context manager it applies to the current thread (see
    :mod:`gp_ntk.settings`).

    Example:
        >>> import torch, gp_ntk
        >>> kernel, x = gp_ntk.NNGPKernel(depth=2), torch.randn(50, 3)
        >>> with gp_ntk.settings.lazy_evaluation("always", block_elements=2**10):
        ...     K = kernel.forward(x, x)  # what GPyTorch's lazy kernel tensor evaluates
        >>> type(K).__name__
        'BlockedKernelLinearOperator'
    """

    _FIELDS = ("_mode", "_min_elements", "_block_elements")
    _mode: str = "auto"
    _min_elements: int = 2**24
    _block_elements: int | None = None
    _MODES = _MODES

    def __init__(
        self, mode: str = "auto", min_elements: int | None = None, block_elements: int | None = None
    ):
        self._check(mode, min_elements, block_elements)
        self.mode = mode
        self.min_elements = None if min_elements is None else int(min_elements)
        self.block_elements = None if block_elements is None else int(block_elements)

    @classmethod
    def _check(cls, mode, min_elements, block_elements) -> None:
        _check_mode(mode)
        for name, value in (("min_elements", min_elements), ("block_elements", block_elements)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def _resolve(self, current: tuple) -> tuple:
        return (
            self.mode,
            current[1] if self.min_elements is None else self.min_elements,
            current[2] if self.block_elements is None else self.block_elements,
        )

    @classmethod
    def set(cls, mode: str, min_elements: int | None = None, block_elements: int | None = None) -> None:
        cls._check(mode, min_elements, block_elements)
        cls._mode = mode
        if min_elements is not None:
            cls._min_elements = int(min_elements)
        if block_elements is not None:
            cls._block_elements = int(block_elements)

    @classmethod
    def applies(cls, num_rows: int, num_cols: int) -> bool:
        values = cls._local.values
        mode, min_elements = (cls._mode, cls._min_elements) if values is None else values[:2]
        if mode == "never":
            return False
        return mode == "always" or num_rows * num_cols > min_elements

    @classmethod
    def block_elements_for(cls, device) -> int:
        values = cls._local.values
        block_elements = cls._block_elements if values is None else values[2]
        if block_elements is not None:
            return block_elements
        return block_evaluation.block_elements_for(device)


class compile_kernels(_ValueSetting):
    """Whether the blocks of large kernel matrices are evaluated through ``torch.compile``.

    Each layer of an NNGP/NTK recursion is a dozen elementwise maps. Even on cache-sized blocks
    (:class:`block_evaluation`) each map is one pass and one dispatch; ``torch.compile`` fuses a
    layer into one loop and the NNGP and NTK recursions into one kernel (measured: about 2x
    faster than the eager blocks on CPU, docs/benchmarks.md), at a one-off compilation cost of
    roughly 15-25 s per kernel configuration and process on a CPU (shapes are dynamic; torch
    caches compiled code on disk, so later processes compile faster). Gradients go through the
    same first derivatives as the eager path.

    ``"auto"`` (default, also ``compile_kernels()`` with no argument): compile the blocks of
    matrices with at least ``min_elements`` entries (2**24, about 4096 x 4096: where one eager
    evaluation takes a second or more and training or CG evaluates it many times), dense or
    lazy; ``"always"``; ``"never"``. Where compilation is unavailable or fails (no C++
    compiler, an unsupported platform) evaluation falls back to eager mode with one warning,
    and stays there, in every thread. As a context manager it applies to the current thread
    (see :mod:`gp_ntk.settings`).
    """

    _FIELDS = ("_mode", "_min_elements")
    _mode: str = "auto"
    _min_elements: int = 2**24
    _MODES = _MODES
    # process-wide: whether compilation works is a property of the platform, not of a thread
    _broken: bool = False

    def __init__(self, mode: str = "auto", min_elements: int | None = None) -> None:
        _check_mode(mode)
        if min_elements is not None and (
            isinstance(min_elements, bool) or not isinstance(min_elements, int) or min_elements < 1
        ):
            raise ValueError(f"min_elements must be a positive integer, got {min_elements!r}")
        self.mode = mode
        self.min_elements = min_elements

    def _resolve(self, current: tuple) -> tuple:
        return (self.mode, current[1] if self.min_elements is None else self.min_elements)

    @classmethod
    def set(cls, mode: str, min_elements: int | None = None) -> None:
        entering = cls(mode, min_elements)
        cls._mode = entering.mode
        if entering.min_elements is not None:
            cls._min_elements = entering.min_elements

    @classmethod
    def applies(cls, num_elements: int) -> bool:
        if cls._broken:
            return False
        values = cls._local.values
        mode, min_elements = (cls._mode, cls._min_elements) if values is None else values
        if mode == "never":
            return False
        return mode == "always" or num_elements >= min_elements
