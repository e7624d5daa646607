"""Doctests of the package see ``torch``, ``gpytorch`` and ``gp_ntk`` already imported."""

import gpytorch
import pytest
import torch

import gp_ntk


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace.update(torch=torch, gpytorch=gpytorch, gp_ntk=gp_ntk)
