import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent
DATA_ROOT = os.environ.get("METAQ_DATA", str(REPO / "data"))


@pytest.fixture(scope="session")
def mnist():
    """The full MNIST as in-memory tensors (obtained by the set-up step; converted if needed)."""
    from metaq_utils.nn.data import load_mnist
    return load_mnist(DATA_ROOT, verbose=False)


@pytest.fixture(scope="session")
def small_mnist(mnist):
    """A 2,048-image training subset, 1,000 validation and 1,000 test images: fast training tests.

    The validation images come from the fixed split (``mnist.val_x``); ``split`` records it, with
    ``val_size`` the subset's size."""
    from metaq_utils.nn.data import MNISTTensors
    split = dict(mnist.split, val_size=1000)
    return MNISTTensors(mnist.train_x[:2048], mnist.train_y[:2048], mnist.test_x[:1000], mnist.test_y[:1000],
                        mnist.val_x[:1000], mnist.val_y[:1000], split)


@pytest.fixture(scope="session")
def load_script():
    """``load_script("experiments/x.py")``: a repository script imported as a module (registered in
    ``sys.modules`` while the session runs: dataclasses look their module up there)."""
    names = []

    def load(relpath: str):
        path = REPO / relpath
        name = "script_" + path.stem
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        names.append(name)
        return mod

    yield load
    for n in names:
        sys.modules.pop(n, None)
