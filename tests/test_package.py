"""The package's top level: BoTorch is optional and imported only with ``gp_ntk.bo``.

Importing BoTorch changes GPyTorch's global settings (Cholesky up to 4096 points, CG off), so an
``import gp_ntk`` that imported it would change GPyTorch's behaviour for every user. Each check
runs in a fresh interpreter: this one has BoTorch loaded already.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=120
    )


def test_import_gp_ntk_leaves_botorch_and_gpytorch_settings_alone() -> None:
    done = _run(
        """
        import sys
        import gpytorch
        before = (gpytorch.settings.max_cholesky_size.value(), gpytorch.settings.fast_computations.covar_root_decomposition.on())
        import gp_ntk
        after = (gpytorch.settings.max_cholesky_size.value(), gpytorch.settings.fast_computations.covar_root_decomposition.on())
        assert "botorch" not in sys.modules, "import gp_ntk imported botorch"
        assert before == after, (before, after)
        kernel = gp_ntk.NNGPKernel(depth=2)
        assert "botorch" not in sys.modules
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_bo_names_are_reachable_from_the_top_level_on_first_use() -> None:
    done = _run(
        """
        import sys
        import gp_ntk
        import gp_ntk.bo
        assert gp_ntk.make_bo_model is gp_ntk.bo.make_bo_model
        assert gp_ntk.run_bo is gp_ntk.bo.run_bo
        assert gp_ntk.CenteredNormalize is gp_ntk.bo.CenteredNormalize
        assert "botorch" in sys.modules
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr


def test_without_botorch_a_bo_name_raises_an_import_error_naming_the_extra() -> None:
    done = _run(
        """
        import sys

        class NoBoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "botorch" or name.startswith("botorch."):
                    raise ImportError("No module named 'botorch'")
                return None

        sys.meta_path.insert(0, NoBoTorch())
        import gp_ntk
        x = gp_ntk.NTKKernel(depth=2)
        try:
            gp_ntk.make_bo_model
        except ImportError as error:
            assert "pip install gp_ntk[bo]" in str(error), str(error)
            print("ok")
        try:
            gp_ntk.not_a_name
        except AttributeError:
            print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "ok"]
