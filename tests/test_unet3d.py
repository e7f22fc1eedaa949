"""UNet3D: shapes for every patch divisible by 2^depth, heads, normalisation, checkpointing."""

import pytest
import torch

from volseg.models import build_model
from volseg.models.normalize import group_count
from volseg.models.unet3d import UNet3D

torch.set_num_threads(1)


@pytest.mark.parametrize("depth,shape", [
    (3, (8, 8, 8)), (3, (16, 16, 16)), (3, (8, 16, 24)), (3, (32, 8, 16)),
    (2, (4, 4, 4)), (2, (12, 20, 8)), (1, (2, 6, 10)),
])
def test_output_shape_equals_input_shape(depth, shape):
    model = UNet3D(1, 1, features=4, depth=depth).eval()
    x = torch.rand(1, 1, *shape) * 255
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.all((y >= 0) & (y <= 1))
    assert model.depth == depth


def test_build_model_defaults_follow_the_notebook():
    model = build_model({"type": "unet"})
    assert model.depth == 3
    assert model.encoders[0].conv1.out_channels == 16
    assert model.bottleneck.conv1.out_channels == 128
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert model.eval()(x).shape == x.shape


def test_softmax_head_for_several_classes():
    model = UNet3D(2, 3, features=4, depth=2).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 2, 8, 8, 8))
    assert y.shape == (1, 3, 8, 8, 8)
    assert torch.allclose(y.sum(dim=1), torch.ones(1, 8, 8, 8), atol=1e-5)


@pytest.mark.parametrize("channels,groups", [(1, 1), (2, 1), (4, 2), (6, 3), (16, 8), (64, 8),
                                             (12, 6)])
def test_group_count_adapts_to_few_channels(channels, groups):
    assert group_count(channels, 8) == groups
    assert channels % group_count(channels, 8) == 0


def test_normalisation_is_inside_the_model():
    torch.manual_seed(0)
    raw = UNet3D(1, 1, features=4, depth=2, norm_mean=100.0, norm_std=20.0).eval()
    plain = UNet3D(1, 1, features=4, depth=2).eval()
    plain.load_state_dict(raw.state_dict())
    x = 100 + 20 * torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(raw(x), plain((x - 100) / 20), atol=1e-6)
    assert "normalize.mean" not in raw.state_dict()  # statistics live in the model config


def test_separable_convolutions_have_fewer_weights():
    dense = UNet3D(1, 1, features=8, depth=2)
    separable = UNet3D(1, 1, features=8, depth=2, separable=True).eval()
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(separable) < count(dense) / 2
    with torch.no_grad():
        assert separable(torch.rand(1, 1, 8, 8, 8)).shape == (1, 1, 8, 8, 8)


def test_checkpointing_every_block_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = UNet3D(1, 1, features=4, depth=2).train()
    ckpt = UNet3D(1, 1, features=4, depth=2, checkpoint=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 1, 8, 8, 8)
    target = (torch.rand(1, 1, 8, 8, 8) > 0.5).float()
    grads = []
    for model in (plain, ckpt):
        model.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model.logits(x), target)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6,
                                   msg=name)


def test_checkpointing_wraps_every_block(monkeypatch):
    import volseg.models.unet3d as mod

    calls = []
    real = mod._checkpoint

    def spy(fn, *args, **kwargs):
        calls.append(type(fn).__name__)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(mod, "_checkpoint", spy)
    model = UNet3D(1, 1, features=4, depth=3, checkpoint=True).train()
    model.logits(torch.randn(1, 1, 8, 8, 8)).sum().backward()
    assert calls.count("ResidualBlock") == 4 and calls.count("UpStage") == 3
    calls.clear()
    with torch.no_grad():
        model.eval()(torch.randn(1, 1, 8, 8, 8))
    assert calls == []  # inference never checkpoints


@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_in_place_gives_the_training_forward_s_values_bit_for_bit(channels_last):
    torch.manual_seed(3)
    model = UNet3D(1, 2, features=8, depth=2, norm_mean=10.0, norm_std=2.0).eval()
    x = 10 + 2 * torch.randn(2, 1, 16, 16, 16)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    kept = x.clone()
    with torch.enable_grad():
        expected = model(x)
    with torch.inference_mode():
        got = model(x)
    with torch.no_grad():
        again = model(x)
    assert torch.equal(got, expected.detach()) and torch.equal(again, got)
    assert torch.equal(x, kept)  # the input (an identity shortcut's operand) is left alone
