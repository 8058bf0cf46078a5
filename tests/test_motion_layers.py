"""Shared motion layers and diffusion: local attention, RoPE, alignment mask, samplers."""

import torch
import torch.nn.functional as F

from talkinghead.diffusion.samplers import ddim, dpmpp_2m, timesteps
from talkinghead.diffusion.schedule import Schedule
from talkinghead.motion.fd2talk import DiTConfig, MotionDiT
from talkinghead.motion.layers import band_mask, local_attention, rope


def test_band_mask_is_fd2talk_alignment_mask():
    m = band_mask(8, 8, 3)
    assert m[4].tolist() == [False, True, True, True, True, True, True, True]
    assert m[0].tolist() == [True, True, True, True, False, False, False, False]
    assert m.sum() == 8 + 2 * (7 + 6 + 5)


def test_local_attention_equals_dense_banded_attention_for_long_sequences():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 301, 8) for _ in range(3))
    for window in (3, 9, 40):
        dense = F.scaled_dot_product_attention(q, k, v, attn_mask=band_mask(301, 301, window))
        for block in (16, 64, 128):
            assert torch.allclose(local_attention(q, k, v, window, block=block), dense, atol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(16), torch.randn(16)
    pos = torch.arange(40)
    rq, rk = rope(q.expand(40, 16), pos), rope(k.expand(40, 16), pos)
    s1 = rq[10] @ rk[7]
    s2 = rq[30] @ rk[27]
    assert torch.allclose(s1, s2, atol=1e-4)
    assert not torch.allclose(rq[10] @ rk[7], rq[10] @ rk[12], atol=1e-3)
    assert torch.allclose(rope(q[None], torch.zeros(1))[0], q)   # position 0: identity


def test_dit_audio_reaches_only_frames_within_k():
    """One block: self-attention runs before the audio enters, so frame i sees audio i-3..i+3."""
    torch.manual_seed(0)
    model = MotionDiT(DiTConfig.debug(channels=4, audio_dim=6, depth=1)).eval()
    for p in model.parameters():  # adaLN-Zero starts with zero gates: give them weights
        torch.nn.init.normal_(p, std=0.3) if p.dim() > 1 else None
    x, audio = torch.randn(1, 40, 4), torch.randn(1, 40, 6)
    t = torch.tensor([500])
    base = model(x, t, audio)
    audio2 = audio.clone()
    audio2[0, 20] += 5.0
    changed = (model(x, t, audio2) - base).abs().amax(-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == list(range(17, 24))


def test_dit_runs_two_lengths_with_the_same_weights():
    model = MotionDiT(DiTConfig.debug(channels=5, audio_dim=8)).eval()
    for n in (30, 333):
        out = model(torch.randn(2, n, 5), torch.tensor([10, 900]), torch.randn(2, n, 8))
        assert out.shape == (2, n, 5)


def test_schedule_and_timesteps():
    s = Schedule.cosine(1000)
    assert s.num_steps == 1000 and s.alphas_cumprod[0] > 0.999 and s.alphas_cumprod[-1] < 1e-3
    assert timesteps(s, 10)[0] == 999 and len(timesteps(s, 10)) == 10
    x0 = torch.randn(3, 4)
    assert torch.allclose(s.add_noise(x0, torch.randn(3, 4), torch.zeros(3, dtype=torch.long)), x0, atol=0.02)


def test_samplers_return_the_denoisers_fixed_point_and_follow_the_seed():
    s = Schedule.cosine(1000)
    target = torch.randn(1, 7, 3)
    for sampler in (ddim, dpmpp_2m):
        out = sampler(lambda x, t: target.expand_as(x), torch.randn(1, 7, 3), s, steps=5)
        assert torch.allclose(out, target, atol=1e-5)
    model = MotionDiT(DiTConfig.debug(channels=3, audio_dim=4)).eval()
    audio = torch.randn(1, 20, 4)
    a = model.sample(audio, 4, torch.Generator().manual_seed(1))
    b = model.sample(audio, 4, torch.Generator().manual_seed(1))
    c = model.sample(audio, 4, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_local_attention_fused_path_matches_dense_in_value_and_gradient():
    """The default blocks (fused SDPA kernel under an additive mask), short sequences (one
    block) and training (gradients) all equal dense banded attention."""
    torch.manual_seed(1)
    for t, window in ((301, 25), (301, 3), (10, 3), (40, 25)):
        q, k, v = (torch.randn(1, 2, t, 8, requires_grad=True) for _ in range(3))
        dense = F.scaled_dot_product_attention(q, k, v, attn_mask=band_mask(t, t, window))
        out = local_attention(q, k, v, window)
        assert torch.isfinite(out).all() and torch.allclose(out, dense, atol=1e-5)
        g_dense = torch.autograd.grad(dense.square().sum(), (q, k, v))
        g_out = torch.autograd.grad(out.square().sum(), (q, k, v))
        assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(g_out, g_dense))


def test_tanh_gelu_equals_torch_and_keeps_autograd():
    from talkinghead.motion.layers import TanhGELU

    x = torch.linspace(-8, 8, 2001)
    ref = F.gelu(x, approximate="tanh")
    with torch.no_grad():
        assert torch.allclose(TanhGELU()(x), ref, atol=1e-6, rtol=0)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(TanhGELU()(xg).sum(), xg)
    (g_ref,) = torch.autograd.grad(F.gelu(xg, approximate="tanh").sum(), xg)
    assert torch.equal(g, g_ref)
    assert torch.equal(x, torch.linspace(-8, 8, 2001))                 # input left as it was


def test_dit_inference_path_equals_training_path_and_follows_the_audio():
    """Without autograd tau's audio half is computed once per audio tensor; it must equal the
    concatenated layer, and an audio tensor changed in place must not reuse the old half."""
    torch.manual_seed(0)
    model = MotionDiT(DiTConfig.debug(channels=4, audio_dim=6)).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3) if p.dim() > 1 else None
    x, audio, t = torch.randn(1, 50, 4), torch.randn(1, 50, 6), torch.tensor([500])
    with torch.enable_grad():
        ref = model(x, t, audio)
    with torch.no_grad():
        first, again = model(x, t, audio), model(x, t, audio)
        assert torch.allclose(first, ref, atol=1e-5) and torch.equal(first, again)
        audio[0, 20] += 5.0
        moved = model(x, t, audio)
    with torch.enable_grad():
        assert torch.allclose(moved, model(x, t, audio), atol=1e-5)
    assert not torch.allclose(moved, first, atol=1e-3)
    with torch.no_grad():                                   # an optimiser step changes tau's weights
        model.tau[0].weight.mul_(1.5)
        stepped = model(x, t, audio)
    with torch.enable_grad():
        assert torch.allclose(stepped, model(x, t, audio), atol=1e-5)
    assert not torch.allclose(stepped, moved, atol=1e-3)
    with torch.inference_mode():                            # inference tensors: no version, no cache
        a2 = audio.clone()
        assert torch.allclose(model(x, t, a2), stepped, atol=1e-5)
        a2[0, 5] += 5.0
        assert not torch.allclose(model(x, t, a2), stepped, atol=1e-3)
