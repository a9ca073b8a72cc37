import pytest
import torch

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
    assert EXPECTED_PARAMETERS == {"lenet5": 44_426, "lenet300100": 266_610}


@pytest.mark.parametrize("arch", ["lenet5", "lenet300100"])
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
