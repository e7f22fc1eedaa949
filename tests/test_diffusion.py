"""Conditional 3D diffusion: denoiser shapes, schedules, DDIM maths, seeded sampling, EMA."""

import pytest
import torch

from volseg.errors import VolsegError
from volseg.models import build_model, ddim
from volseg.models.diffusion import DDPMUNet3D, DiffusionModel, Downsample3D, Upsample3D

torch.set_num_threads(1)

TINY = {"type": "diffusion", "ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1}


@pytest.mark.parametrize("ch_mult,shape", [((1, 2), (8, 8, 8)), ((1, 2), (4, 12, 6)),
                                           ((1, 2, 2), (8, 16, 12)), ((1,), (5, 7, 3))])
def test_denoiser_output_shape_equals_input_shape(ch_mult, shape):
    net = DDPMUNet3D(in_channels=2, out_ch=1, ch=8, ch_mult=ch_mult).eval()
    x = torch.randn(1, 2, *shape)
    with torch.no_grad():
        eps = net(x, torch.tensor([500.0]))
    assert eps.shape == (1, 1, *shape)
    assert net.depth == len(ch_mult) - 1


def test_resampling_layers_halve_and_double():
    x = torch.randn(1, 4, 8, 6, 10)
    assert Downsample3D(4)(x).shape == (1, 4, 4, 3, 5)
    assert Downsample3D(4, with_conv=False)(x).shape == (1, 4, 4, 3, 5)
    assert Upsample3D(4)(x).shape == (1, 4, 16, 12, 20)


def test_attention_only_at_the_coarsest_level():
    net = DDPMUNet3D(ch=8, ch_mult=(1, 2, 2), num_res_blocks=1)
    assert [len(s.attn) for s in net.down] == [0, 0, 1]
    assert [len(s.attn) for s in net.up] == [0, 0, 2]


def test_timestep_sequences():
    assert ddim.timestep_sequence("non-uniform", 10) == [0, 199, 399, 599, 699, 799, 849, 899,
                                                         949, 999]
    uni = ddim.timestep_sequence("uniform", 10)
    assert len(uni) == 10 and uni[0] == 0 and uni[-1] == 999
    for kind in ddim.SCHEDULES:
        for steps in (2, 5, 20, 50):
            seq = ddim.timestep_sequence(kind, steps)
            assert len(seq) == steps and seq == sorted(set(seq)) and seq[-1] == 999
    with pytest.raises(VolsegError, match="unknown schedule"):
        ddim.timestep_sequence("cosine", 10)


def test_linear_schedule():
    a = ddim.alphas_cumprod_from_betas(ddim.linear_betas(1e-4, 0.02, 1000))
    assert a.shape == (1000,)
    assert abs(float(a[0]) - (1 - 1e-4)) < 1e-7
    assert float(a[-1]) < 1e-4
    assert ddim.alpha_at(a, -1) == 1.0


def test_ddim_with_the_true_noise_recovers_x0_exactly():
    torch.manual_seed(0)
    a = ddim.alphas_cumprod_from_betas(ddim.linear_betas())
    x0 = torch.randn(1, 1, 4, 4, 4)
    noise = torch.randn(1, 1, 4, 4, 4)
    seq = ddim.timestep_sequence("uniform", 10)

    def oracle(condition, x_t, t):  # the eps that makes x_t consistent with x0
        at = ddim.alpha_at(a, t)
        return (x_t - at ** 0.5 * x0) / (1 - at) ** 0.5

    out = ddim.sample(oracle, torch.zeros(1, 1, 4, 4, 4), shape=x0.shape, timesteps=seq,
                      alphas_cumprod=a, noise=noise)
    torch.testing.assert_close(out, x0, rtol=1e-3, atol=1e-3)


def test_ddim_step_pieces():
    x_t, eps = torch.randn(2, 1, 3, 3, 3), torch.randn(2, 1, 3, 3, 3)
    x0 = ddim.predict_x0(x_t, eps, 0.5)
    torch.testing.assert_close(x0, (x_t - eps * 0.5 ** 0.5) / 0.5 ** 0.5)
    torch.testing.assert_close(ddim.ddim_step(x_t, eps, a_t=0.5, a_next=1.0), x0)
    with pytest.raises(VolsegError, match="noise"):
        ddim.ddim_step(x_t, eps, a_t=0.5, a_next=0.8, eta=1.0)
    noisy = ddim.ddim_step(x_t, eps, a_t=0.5, a_next=0.8, eta=1.0, noise=torch.ones_like(x_t))
    plain = ddim.ddim_step(x_t, eps, a_t=0.5, a_next=0.8, eta=0.0)
    assert not torch.allclose(noisy, plain)


def test_sample_is_seeded_and_in_raw_units():
    torch.manual_seed(0)
    model = build_model(dict(TINY, norm_mean=50.0, norm_std=10.0, target_mean=200.0,
                             target_std=5.0)).eval()
    assert isinstance(model, DiffusionModel) and model.depth == 1
    cond = 50 + 10 * torch.randn(1, 1, 8, 8, 8)
    runs = [model.sample(cond, eta=eta, generator=torch.Generator().manual_seed(3))
            for eta in (0.0, 0.0, 1.0, 1.0)]
    torch.testing.assert_close(runs[0], runs[1])
    torch.testing.assert_close(runs[2], runs[3])
    assert runs[0].shape == cond.shape
    assert 150 < float(runs[0].mean()) < 250  # denormalised to target units
    other = model.sample(cond, generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(runs[0], other)


def test_checkpointed_denoiser_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = DDPMUNet3D(ch=8, ch_mult=(1, 2)).train()
    ckpt = DDPMUNet3D(ch=8, ch_mult=(1, 2), checkpoint=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x, t = torch.randn(2, 2, 8, 8, 8), torch.tensor([10.0, 900.0])
    grads = []
    for net in (plain, ckpt):
        net.zero_grad()
        net(x, t).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6,
                                   msg=name)


def test_schedule_recorded_in_the_config_is_used():
    model = build_model(dict(TINY, schedule={"timesteps": [0, 500, 999]}))
    assert model.timesteps == [0, 500, 999]
    model = build_model(dict(TINY, schedule={"scheduler_type": "non-uniform", "steps": 10}))
    assert model.timesteps[4] == 699


def test_clipped_steps_keep_x0_in_the_target_range():
    x_t, eps = 50 * torch.randn(1, 1, 4, 4, 4), torch.randn(1, 1, 4, 4, 4)
    out = ddim.ddim_step(x_t, eps, a_t=1e-3, a_next=1.0, clip=(-1.0, 2.0))
    assert float(out.min()) >= -1.0 and float(out.max()) <= 2.0
    model = build_model(dict(TINY, target_mean=10.0, target_std=2.0, target_range=[6.0, 16.0]))
    assert model.x0_range == pytest.approx((-2.5, 3.5))  # +-10% of the span
    cond = torch.randn(1, 1, 8, 8, 8)
    out = model.eval().sample(cond, generator=torch.Generator().manual_seed(0))
    assert 5.0 - 1e-4 <= float(out.min()) and float(out.max()) <= 17.0 + 1e-4
    unclipped = build_model(dict(TINY, target_range=[6.0, 16.0],
                                 schedule={"clip_x0": False}))
    assert unclipped.x0_range is None


def test_partial_sampling_starts_from_the_noised_condition():
    model = build_model(dict(TINY, target_mean=1.0, target_std=2.0,
                             schedule={"start_t": 400})).eval()
    assert model.sampling_timesteps() == [0, 111, 222, 333]
    cond, noise = torch.randn(1, 1, 8, 8, 8), torch.randn(1, 1, 8, 8, 8)
    a = model.alpha(333)
    expected = a ** 0.5 * (cond - 1.0) / 2.0 + (1 - a) ** 0.5 * noise
    torch.testing.assert_close(model.initial_state(cond, noise), expected)
    assert model.sample(cond, noise=noise).shape == cond.shape
    assert build_model(TINY).initial_state(cond, noise) is noise


def _consistent_eps(x_t, x0, a):
    return (x_t - a ** 0.5 * x0) / (1 - a) ** 0.5


@pytest.mark.parametrize("prediction", ddim.PREDICTIONS)
@pytest.mark.parametrize("a_t,a_next", [(0.9999, 1.0), (0.5, 1.0), (4e-5, 1.0), (0.3, 0.7)])
def test_a_perfect_predictor_of_each_kind_gives_x0_in_one_step(prediction, a_t, a_next):
    torch.manual_seed(0)
    x0, eps = torch.randn(2, 1, 4, 4, 4), torch.randn(2, 1, 4, 4, 4)
    x_t = a_t ** 0.5 * x0 + (1 - a_t) ** 0.5 * eps
    output = ddim.training_target(x0, eps, torch.tensor(a_t), prediction)
    got_x0, got_eps = ddim.split_prediction(x_t, output, a_t, prediction)
    torch.testing.assert_close(got_x0, x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_eps, eps, rtol=1e-4, atol=2e-3)
    expected = a_next ** 0.5 * x0 + (1 - a_next) ** 0.5 * eps  # the same trajectory, one step on
    for clip in (None, (-10.0, 10.0)):
        out = ddim.ddim_step(x_t, output, a_t=a_t, a_next=a_next, clip=clip, prediction=prediction)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=2e-3)


def test_v_is_the_documented_rotation():
    x0, eps, a = torch.randn(3), torch.randn(3), torch.tensor(0.36)
    v = ddim.training_target(x0, eps, a, "v")
    torch.testing.assert_close(v, 0.6 * eps - 0.8 * x0)
    x_t = 0.6 * x0 + 0.8 * eps
    torch.testing.assert_close(ddim.split_prediction(x_t, v, 0.36, "v")[0], 0.6 * x_t - 0.8 * v)
    with pytest.raises(VolsegError, match="diffusion.prediction: unknown prediction 'noise'; use one of eps, x0, v"):
        ddim.split_prediction(x_t, v, 0.36, "noise")


@pytest.mark.parametrize("prediction", ddim.PREDICTIONS)
@pytest.mark.parametrize("schedule,eta", [("uniform", 0.0), ("non-uniform", 0.0), ("uniform", 1.0)])
def test_sampling_with_a_perfect_predictor_of_each_kind_recovers_x0(prediction, schedule, eta):
    torch.manual_seed(0)
    a = ddim.alphas_cumprod_from_betas(ddim.linear_betas())
    x0 = torch.randn(1, 1, 4, 4, 4)
    seq = ddim.timestep_sequence(schedule, 10)

    def oracle(condition, x_t, t):
        at = ddim.alpha_at(a, t)
        return ddim.training_target(x0, _consistent_eps(x_t, x0, at), torch.tensor(at), prediction)

    out = ddim.sample(oracle, torch.zeros(1, 1, 4, 4, 4), shape=x0.shape, timesteps=seq,
                      alphas_cumprod=a, noise=torch.randn(1, 1, 4, 4, 4), eta=eta,
                      generator=torch.Generator().manual_seed(1), clip=(-8.0, 8.0),
                      prediction=prediction)
    torch.testing.assert_close(out, x0, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("prediction", ddim.PREDICTIONS)
def test_model_of_each_kind_samples_trains_and_starts_late(prediction):
    from volseg.training.loop import diffusion_step_loss

    torch.manual_seed(0)
    model = build_model(dict(TINY, target_range=[-3.0, 3.0],
                             schedule={"prediction": prediction, "start_t": 500}))
    assert model.prediction == prediction
    cond = torch.randn(1, 1, 8, 8, 8)
    out = model.eval().sample(cond, eta=0.5, generator=torch.Generator().manual_seed(0))
    assert out.shape == cond.shape and bool(torch.isfinite(out).all())
    model.train()
    batch = {"image": cond.repeat(2, 1, 1, 1, 1), "target": torch.randn(2, 1, 8, 8, 8)}
    loss = diffusion_step_loss(model, batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert float(loss.detach()) > 0 and model.denoiser.conv_out.weight.grad is not None


def test_eps_loss_is_the_original_fast_ddpm_loss():
    from volseg.training.loop import diffusion_step_loss

    torch.manual_seed(0)
    model = build_model(TINY)
    batch = {"image": torch.randn(2, 1, 8, 8, 8), "target": torch.randn(2, 1, 8, 8, 8)}
    loss = diffusion_step_loss(model, batch, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)  # the draws of the loss, repeated by hand
    seq = torch.tensor(model.timesteps)
    first = torch.randint(0, len(seq), (2,), generator=gen)
    t = seq[torch.cat([first, len(seq) - 1 - first])[:2]]
    eps = torch.randn((2, 1, 8, 8, 8), generator=gen)
    a = model.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
    x_t = batch["target"] * a.sqrt() + eps * (1 - a).sqrt()
    pred = model.denoiser(torch.cat([batch["image"], x_t], 1), t.float())
    torch.testing.assert_close(loss, ((pred - eps) ** 2).mean())
