"""Global switches, used as context managers or set for a whole program."""

from __future__ import annotations

__all__ = ["check_finite"]


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
