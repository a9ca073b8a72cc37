import pytest
import torch

import numpy as np

from metaq_utils.coding.architectures import REGISTRY, Architecture, architecture, preprocessing_for
from metaq_utils.coding.fileformat import per_layer_table_groups, read_compressed, encode_compressed
from metaq_utils.coding.preprocessing import MNIST_PREPROCESSING
from metaq_utils.nn import networks as N
from metaq_utils.nn.networks import EXPECTED_PARAMETERS, build_model, count_parameters, parameter_shapes


def test_lenet5_parameter_count_matches_spec():
    m = build_model("lenet5")
    assert count_parameters(m) == 44_426
    # per layer: 156 + 2,416 + 30,840 + 10,164 + 850 (spec §3)
    per_layer = [sum(p.numel() for p in mod.parameters()) for mod in (m.conv1, m.conv2, m.fc1, m.fc2, m.fc3)]
    assert per_layer == [156, 2416, 30840, 10164, 850]
    assert 32 * count_parameters(m) == 1_421_632


def test_lenet300100_parameter_count():
    assert count_parameters(build_model("lenet300100")) == 266_610
    assert EXPECTED_PARAMETERS == {"lenet5": 44_426, "lenet300100": 266_610, "lenet5caffe": 431_080}


def test_lenet5caffe_matches_the_caffe_prototxt():
    """Caffe examples/mnist/lenet.prototxt: conv1 20 5×5, pool1 MAX 2/2, conv2 50 5×5, pool2 MAX 2/2,
    ip1 500, relu1, ip2 10 — parameter counts by hand: 20·25+20, 50·20·25+50, 500·800+500, 10·500+10."""
    m = build_model("lenet5caffe")
    per_layer = [sum(p.numel() for p in mod.parameters()) for mod in (m.conv1, m.conv2, m.fc1, m.fc2)]
    assert per_layer == [20 * 25 + 20, 50 * 20 * 25 + 50, 500 * 800 + 500, 10 * 500 + 10] == [520, 25_050, 400_500, 5_010]
    assert count_parameters(m) == 431_080 and 32 * 431_080 == 13_794_560
    assert isinstance(m.pool, torch.nn.MaxPool2d) and m.pool.kernel_size == 2 and m.pool.stride == 2
    # no non-linearity between conv and pool: with zero biases and positive scaling the conv stack is
    # positively homogeneous (max-pool commutes with c > 0); ReLU after fc1 keeps the whole net so
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 1:
                p.zero_()
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(m(3.0 * x), 3.0 * m(x), atol=1e-4)


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_every_registry_entry_builds_and_round_trips_through_the_file_format(arch):
    """One entry is all a network needs: its class builds with the registered count, and a file that
    names it decodes to the same tensors with the entry's preprocessing recorded."""
    entry = architecture(arch)
    m = build_model(arch)
    assert type(m).__name__ == entry.model and count_parameters(m) == entry.n_params
    assert preprocessing_for(arch) == entry.preprocessing == N.PREPROCESSING[arch]
    tensors = [np.round(p.detach().numpy() * 8) / 8 for p in m.parameters()]
    cm = read_compressed(encode_compressed(arch, tensors, per_layer_table_groups(tensors)), expected_arch=arch)
    assert cm.arch == arch                               # the file stores mean/std as float32
    np.testing.assert_array_equal(np.float32(cm.preprocessing.mean), np.float32(entry.preprocessing.mean))
    np.testing.assert_array_equal(np.float32(cm.preprocessing.std), np.float32(entry.preprocessing.std))
    for a, b in zip(tensors, cm.tensors):
        np.testing.assert_array_equal(a.astype(np.float32), b)
    loaded = N.model_from_compressed(cm, raw_input=True)
    assert loaded(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_registry_rejects_bad_entries_and_a_wrong_count_fails_loudly(monkeypatch):
    with pytest.raises(ValueError, match="lower-case"):
        Architecture("LeNet", "LeNet5", 1, MNIST_PREPROCESSING, "", "")
    with pytest.raises(ValueError, match="n_params"):
        Architecture("x", "LeNet5", 0, MNIST_PREPROCESSING, "", "")
    with pytest.raises(ValueError, match="unknown architecture 'lenet7'; known: "):
        architecture("lenet7")
    assert preprocessing_for("lenet7") is None          # an unknown id in a file is read, not refused
    wrong = Architecture("lenet5", "LeNet5", 44_427, MNIST_PREPROCESSING, "", "")
    monkeypatch.setitem(REGISTRY, "lenet5", wrong)
    with pytest.raises(RuntimeError, match="44,426 parameters, the registry says 44,427"):
        build_model("lenet5")
    with pytest.raises(TypeError, match="no nn.Module class"):
        N._model_class(Architecture("x", "Normalize_", 1, MNIST_PREPROCESSING, "", ""))


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_forward_shape(arch):
    assert build_model(arch)(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_lenet5_is_tanh_avgpool():
    m = build_model("lenet5")
    assert isinstance(m.pool, torch.nn.AvgPool2d)
    assert m.conv1.padding == (0, 0)
    # a network whose activations are tanh is odd in its input when biases are zero
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 1:
                p.zero_()
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(m(-x), -m(x), atol=1e-6)


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'lenet7'"):
        build_model("lenet7")


def test_parameter_shapes_order():
    names = [n for n, _ in parameter_shapes("lenet5")]
    assert names == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias",
                     "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
