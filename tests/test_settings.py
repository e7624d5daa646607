"""gp_ntk.settings: re-entrant, nestable context managers with per-thread overrides."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch

import gp_ntk
from gp_ntk import settings


@pytest.fixture(autouse=True)
def _compilation_available(monkeypatch: pytest.MonkeyPatch) -> None:
    # only applies() is read here, nothing is compiled: pretend compilation works
    monkeypatch.setattr(settings.compile_kernels, "_broken", False)


def _snapshot() -> tuple:
    """Everything the engine reads from the settings, through the methods it calls."""
    cpu = torch.device("cpu")
    return (
        settings.check_finite.on(),
        settings.block_evaluation.applies(1000),
        settings.block_evaluation.block_elements_for(cpu),
        settings.lazy_evaluation.applies(100, 100),
        settings.lazy_evaluation.block_elements_for(cpu),
        settings.compile_kernels.applies(1000),
    )


def _objects() -> list:
    return [
        settings.check_finite(False),
        settings.block_evaluation(min_elements=7, block_elements=99),
        settings.lazy_evaluation("always", min_elements=5, block_elements=60),
        settings.compile_kernels("always", min_elements=3),
    ]


def _run_in_thread(function: Callable[[], object]) -> object:
    results: list = []
    errors: list = []

    def target() -> None:
        try:
            results.append(function())
        except BaseException as error:  # re-raised in the calling thread
            errors.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results[0]


@pytest.mark.parametrize("index", range(4), ids=["check_finite", "block", "lazy", "compile"])
def test_an_object_entered_twice_restores_the_state(index: int) -> None:
    before = _snapshot()
    manager = _objects()[index]
    with manager:
        inside = _snapshot()
        assert inside != before
        with manager:
            assert _snapshot() == inside
        assert _snapshot() == inside
    assert _snapshot() == before


def test_nested_objects_restore_in_order() -> None:
    before = _snapshot()
    outer, inner = settings.lazy_evaluation("always", block_elements=60), settings.lazy_evaluation("never")
    with outer:
        with inner:
            assert not settings.lazy_evaluation.applies(10**6, 10**6)
            # arguments left out keep what was in force at entry
            assert settings.lazy_evaluation.block_elements_for(torch.device("cpu")) == 60
            with outer:
                assert settings.lazy_evaluation.applies(1, 1)
            assert not settings.lazy_evaluation.applies(1, 1)
        assert settings.lazy_evaluation.applies(1, 1)
    assert _snapshot() == before


def test_exit_restores_after_an_exception() -> None:
    before = _snapshot()
    managers = _objects()
    with pytest.raises(KeyError):
        with managers[0], managers[1], managers[2], managers[3]:
            raise KeyError("inside")
    assert _snapshot() == before


def test_an_exit_without_entry_is_refused() -> None:
    with pytest.raises(RuntimeError, match="exited more often"):
        settings.check_finite(False).__exit__(None, None, None)
    assert settings.check_finite.on()


def test_no_argument_modes_mean_auto() -> None:
    with settings.lazy_evaluation("always"):
        with settings.lazy_evaluation():
            assert not settings.lazy_evaluation.applies(10, 10)
            assert settings.lazy_evaluation.applies(5000, 5000)
    assert settings.lazy_evaluation().mode == "auto"
    with settings.compile_kernels("always"):
        with settings.compile_kernels():
            assert not settings.compile_kernels.applies(10)
    assert settings.compile_kernels().mode == "auto"


def test_a_block_in_one_thread_leaves_other_threads_checked() -> None:
    entered, done = threading.Event(), threading.Event()

    def unchecked_worker() -> None:
        with settings.check_finite(False):
            entered.set()
            done.wait(timeout=60)
            assert not settings.check_finite.on()

    worker = threading.Thread(target=unchecked_worker)
    worker.start()
    try:
        assert entered.wait(timeout=60)
        assert settings.check_finite.on()
        x = torch.randn(4, 3)
        x[1, 1] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            gp_ntk.NNGPKernel(depth=2)(x).to_dense()
    finally:
        done.set()
        worker.join(timeout=60)
    assert settings.check_finite.on()


def test_threads_start_from_the_defaults_not_from_the_callers_block() -> None:
    before = _run_in_thread(_snapshot)
    for manager in _objects():
        with manager:
            assert _run_in_thread(_snapshot) == before
    assert _snapshot() == before


def test_one_object_entered_by_interleaved_threads() -> None:
    manager = settings.check_finite(False)
    barrier = threading.Barrier(2, timeout=60)
    seen: dict[str, list[bool]] = {"a": [], "b": []}

    def worker(name: str, exit_first: bool) -> None:
        with manager:
            barrier.wait()  # both inside
            seen[name].append(settings.check_finite.on())
            if not exit_first:
                barrier.wait()  # the other has exited
                seen[name].append(settings.check_finite.on())
        seen[name].append(settings.check_finite.on())
        if exit_first:
            barrier.wait()

    threads = [
        threading.Thread(target=worker, args=("a", True)),
        threading.Thread(target=worker, args=("b", False)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert seen == {"a": [False, True], "b": [False, False, True]}
    assert settings.check_finite.on()


def test_set_is_process_wide_and_a_block_still_wins_in_its_thread() -> None:
    try:
        settings.check_finite.set(False)
        assert not settings.check_finite.on()
        assert _run_in_thread(settings.check_finite.on) is False
        with settings.check_finite(True):
            assert settings.check_finite.on()
            settings.check_finite.set(False)
            assert settings.check_finite.on()
        assert not settings.check_finite.on()
    finally:
        settings.check_finite.set(True)
    assert settings.check_finite.on()
    assert _run_in_thread(settings.check_finite.on) is True


def test_set_keeps_the_values_it_is_not_given() -> None:
    before = settings.compile_kernels._min_elements
    try:
        settings.compile_kernels.set("always", min_elements=11)
        settings.compile_kernels.set("auto")
        assert settings.compile_kernels._min_elements == 11
        assert not settings.compile_kernels.applies(10)
        assert settings.compile_kernels.applies(11)
    finally:
        settings.compile_kernels.set("auto", min_elements=before)


def test_bad_values_are_refused_before_anything_changes() -> None:
    before = _snapshot()
    for make in (
        lambda: settings.lazy_evaluation("sometimes"),
        lambda: settings.compile_kernels("sometimes"),
        lambda: settings.compile_kernels("always", min_elements=0),
        lambda: settings.block_evaluation(min_elements=-1),
        lambda: settings.lazy_evaluation.set("sometimes"),
        lambda: settings.compile_kernels.set("auto", min_elements=True),
    ):
        with pytest.raises(ValueError):
            make()
    assert _snapshot() == before


def test_settings_are_gpytorch_settings_with_thread_local_values() -> None:
    from gpytorch.settings import _feature_flag, _value_context

    assert isinstance(settings.check_finite(False), _feature_flag)
    for setting in (settings.block_evaluation, settings.lazy_evaluation, settings.compile_kernels):
        assert isinstance(setting(), _value_context)
    assert (
        settings.check_finite.on() and not settings.check_finite.off() and settings.check_finite.is_default()
    )
    with settings.check_finite(False):
        assert settings.check_finite.off() and not settings.check_finite.is_default()
    before = settings.lazy_evaluation.value()
    with settings.lazy_evaluation("always", min_elements=7):
        assert settings.lazy_evaluation.value()[:2] == ("always", 7)
        # the other settings keep their own stores
        assert settings.compile_kernels.value() == (
            settings.compile_kernels._mode,
            settings.compile_kernels._min_elements,
        )
        seen = []
        thread = threading.Thread(target=lambda: seen.append(settings.lazy_evaluation.value()))
        thread.start()
        thread.join()
        assert seen == [before]
    assert settings.lazy_evaluation.value() == before
