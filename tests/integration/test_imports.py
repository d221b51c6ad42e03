"""Importing the package has no side effect: no demo package, no training, no umask change; the
demo's datasets and weights are registered by name and load on first use. One fresh interpreter
(importing torch and Lightning takes seconds) checks it all."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_imports_have_no_side_effects_and_the_demo_loads_on_first_use():
    script = textwrap.dedent(
        """
        import os, sys
        os.umask(0o027)
        import lightning_unlearn.callbacks, lightning_unlearn.maths.objectives, lightning_unlearn
        from lightning_unlearn import UnlearningModule
        import lightning_unlearn.datasets, lightning_unlearn.cli
        assert "lightning_unlearn.demo" not in sys.modules, "imported by the package"
        assert os.umask(0o022) == 0o027, "the umask was touched"
        from lightning_unlearn.datasets import available_datasets, get_dataset_factory, needs_root
        assert {"demo_objects", "demo_textures"} <= set(available_datasets()) and not needs_root("demo_objects")
        assert "lightning_unlearn.demo" not in sys.modules
        factory = get_dataset_factory("demo_objects")  # lazy: now the demo package loads
        from lightning_unlearn.demo.world_datasets import demo_objects
        assert factory is demo_objects
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
