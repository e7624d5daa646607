"""Global switches, used as context managers or set for a whole program."""

from __future__ import annotations

__all__ = ["block_evaluation", "check_finite", "compile_kernels", "lazy_evaluation"]


class check_finite:
    """Refuse inputs with NaN/inf entries (on by default).

    The scan costs O(n d) per kernel call, negligible next to the O(n m d) kernel, but on a
    GPU it synchronises the device. Switched off, a non-finite entry in row i of ``x1``
    (or ``x2``) makes row i (column i) of the kernel matrix non-finite and leaves every other
    entry as it would be.

    Example:
        >>> with gp_ntk.settings.check_finite(False):
        ...     K = kernel(x).to_dense()
        >>> gp_ntk.settings.check_finite.set(False)  # for the rest of the program
    """

    _state: bool = True

    def __init__(self, state: bool = True) -> None:
        self.state = bool(state)
        self._previous = type(self)._state

    @classmethod
    def on(cls) -> bool:
        return cls._state

    @classmethod
    def set(cls, state: bool) -> None:
        cls._state = bool(state)

    def __enter__(self) -> check_finite:
        self._previous = type(self)._state
        type(self)._state = self.state
        return self

    def __exit__(self, *exc) -> None:
        type(self)._state = self._previous


class block_evaluation:
    """How dense kernel matrices are evaluated: in row blocks, or in one piece.

    A deep-kernel layer is a dozen elementwise maps. On whole N x M temporaries each map is a
    round trip through main memory; on blocks of about ``block_elements`` entries the
    temporaries stay in cache (measured: 3-5x faster per layer on CPU, docs/benchmarks.md). A
    matrix ``k(X, X)`` is then also built from the blocks on and above its diagonal only.

    Matrices with at least ``min_elements`` entries (default 2**18, about 512 x 512) are
    evaluated in blocks through :class:`gp_ntk.blocks.DenseKernel`, whose backward pass
    recomputes each block instead of keeping a graph of N x M temporaries: the memory of a
    differentiable evaluation is its result plus one block. Those matrices are differentiable
    once (enough for marginal likelihoods and acquisition gradients); smaller ones are
    evaluated in one piece and are differentiable any number of times.

    ``block_elements=None`` (default) picks 2**17 entries on a CPU (a float64 block of 1 MB,
    cache-sized) and 2**24 on a GPU, where blocks must be large to keep the device busy.

    Example:
        >>> with gp_ntk.settings.block_evaluation(min_elements=0, block_elements=2**15):
        ...     K = kernel(x).to_dense()
    """

    _min_elements: int = 2**18
    _block_elements: int | None = None
    _CPU_BLOCK = 2**17
    _GPU_BLOCK = 2**24

    def __init__(self, min_elements: int | None = None, block_elements: int | None = None) -> None:
        self._check(min_elements, block_elements)
        self.min_elements = type(self)._min_elements if min_elements is None else int(min_elements)
        self.block_elements = type(self)._block_elements if block_elements is None else block_elements

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

    @classmethod
    def set(cls, min_elements: int | None = None, block_elements: int | None = None) -> None:
        cls._check(min_elements, block_elements)
        if min_elements is not None:
            cls._min_elements = int(min_elements)
        if block_elements is not None:
            cls._block_elements = block_elements

    @classmethod
    def applies(cls, num_elements: int) -> bool:
        return num_elements >= cls._min_elements

    @classmethod
    def block_elements_for(cls, device) -> int:
        if cls._block_elements is not None:
            return cls._block_elements
        return cls._CPU_BLOCK if getattr(device, "type", "cpu") == "cpu" else cls._GPU_BLOCK

    def __enter__(self) -> block_evaluation:
        cls = type(self)
        self._previous = (cls._min_elements, cls._block_elements)
        cls._min_elements, cls._block_elements = self.min_elements, self.block_elements
        return self

    def __exit__(self, *exc) -> None:
        cls = type(self)
        cls._min_elements, cls._block_elements = self._previous


class lazy_evaluation:
    """When a kernel returns a blocked, never-materialised operator instead of a dense matrix.

    ``"auto"`` (default): lazily once a full matrix ``k(X1, X2)`` would exceed
    ``min_elements`` entries (2**24 = 16.8 M, 134 MB in float64); ``"always"``; ``"never"``.
    The operator (:class:`gp_ntk.lazy.BlockedKernelLinearOperator`) evaluates ``block_elements``
    entries at a time for matrix products and hyperparameter gradients, so CG/Lanczos inference
    (GPyTorch's path above ``max_cholesky_size``) needs memory linear in N. ``block_elements``
    defaults to :class:`block_evaluation`'s block size. Where GPyTorch asks for the dense
    matrix (the Cholesky path) the operator builds it once, exactly as the dense path would.

    Example:
        >>> with gp_ntk.settings.lazy_evaluation("always", block_elements=2**20):
        ...     loss = -mll(model(train_x), train_y)
    """

    _mode: str = "auto"
    _min_elements: int = 2**24
    _block_elements: int | None = None
    _MODES = ("auto", "always", "never")

    def __init__(
        self, mode: str = "always", min_elements: int | None = None, block_elements: int | None = None
    ):
        self._check(mode, min_elements, block_elements)
        self.mode = mode
        self.min_elements = type(self)._min_elements if min_elements is None else int(min_elements)
        self.block_elements = type(self)._block_elements if block_elements is None else int(block_elements)

    @classmethod
    def _check(cls, mode, min_elements, block_elements) -> None:
        if mode not in cls._MODES:
            raise ValueError(f"mode must be one of {cls._MODES}, got {mode!r}")
        for name, value in (("min_elements", min_elements), ("block_elements", block_elements)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

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
        if cls._mode == "never":
            return False
        return cls._mode == "always" or num_rows * num_cols > cls._min_elements

    @classmethod
    def block_elements_for(cls, device) -> int:
        if cls._block_elements is not None:
            return cls._block_elements
        return block_evaluation.block_elements_for(device)

    def __enter__(self) -> lazy_evaluation:
        cls = type(self)
        self._previous = (cls._mode, cls._min_elements, cls._block_elements)
        cls._mode, cls._min_elements, cls._block_elements = self.mode, self.min_elements, self.block_elements
        return self

    def __exit__(self, *exc) -> None:
        cls = type(self)
        cls._mode, cls._min_elements, cls._block_elements = self._previous


class compile_kernels:
    """Whether the blocks of large kernel matrices are evaluated through ``torch.compile``.

    Each layer of an NNGP/NTK recursion is a dozen elementwise maps. Even on cache-sized blocks
    (:class:`block_evaluation`) each map is one pass and one dispatch; ``torch.compile`` fuses a
    layer into one loop and the NNGP and NTK recursions into one kernel (measured: about 2x
    faster than the eager blocks on CPU, docs/benchmarks.md), at a one-off compilation cost of
    roughly 15-25 s per kernel configuration and process on a CPU (shapes are dynamic; torch
    caches compiled code on disk, so later processes compile faster). Gradients go through the
    same first derivatives as the eager path.

    ``"auto"`` (default): compile the blocks of matrices with at least ``min_elements`` entries
    (2**24, about 4096 x 4096: where one eager evaluation takes a second or more and training or
    CG evaluates it many times), dense or lazy; ``"always"``; ``"never"``. Where compilation is
    unavailable or fails (no C++ compiler, an unsupported platform) evaluation falls back to
    eager mode with one warning, and stays there.
    """

    _mode: str = "auto"
    _min_elements: int = 2**24
    _MODES = ("auto", "always", "never")
    _broken: bool = False

    def __init__(self, mode: str = "always", min_elements: int | None = None) -> None:
        if mode not in self._MODES:
            raise ValueError(f"mode must be one of {self._MODES}, got {mode!r}")
        if min_elements is not None and (
            isinstance(min_elements, bool) or not isinstance(min_elements, int) or min_elements < 1
        ):
            raise ValueError(f"min_elements must be a positive integer, got {min_elements!r}")
        self.mode = mode
        self.min_elements = type(self)._min_elements if min_elements is None else min_elements

    @classmethod
    def set(cls, mode: str, min_elements: int | None = None) -> None:
        entering = cls(mode, min_elements)
        cls._mode, cls._min_elements = entering.mode, entering.min_elements

    @classmethod
    def applies(cls, num_elements: int) -> bool:
        if cls._broken or cls._mode == "never":
            return False
        return cls._mode == "always" or num_elements >= cls._min_elements

    def __enter__(self) -> compile_kernels:
        cls = type(self)
        self._previous = (cls._mode, cls._min_elements)
        cls._mode, cls._min_elements = self.mode, self.min_elements
        return self

    def __exit__(self, *exc) -> None:
        cls = type(self)
        cls._mode, cls._min_elements = self._previous
