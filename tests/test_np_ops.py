"""talkinghead.nets.np_ops against torch's own layers (the numpy inference path's building blocks)."""

import numpy as np
import torch
import torch.nn.functional as F

from talkinghead.nets import np_ops


def _x(*shape, seed=0, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def test_gelu_matches_torch_exact_and_tanh():
    x = np.concatenate([_x(4000), np.linspace(-12, 12, 2001, dtype=np.float32)])
    t = torch.from_numpy(x)
    np.testing.assert_allclose(np_ops.gelu(x), F.gelu(t).numpy(), atol=3e-7, rtol=3e-7)
    np.testing.assert_allclose(np_ops.gelu_tanh(x), F.gelu(t, approximate="tanh").numpy(), atol=1e-6)
    assert np_ops.gelu(x).dtype == np.float32


def test_erfc_accuracy():
    import math
    x = np.linspace(-6, 6, 1201)
    ref = np.array([math.erfc(v) for v in x])
    assert np.max(np.abs(np_ops.erfc(x) - ref) / ref) < 2e-7


def test_linear_layer_norm_silu_softmax_attention():
    x = _x(2, 7, 16)
    lin = torch.nn.Linear(16, 12)
    state = {"lin." + k: v.detach().numpy() for k, v in lin.state_dict().items()}
    np.testing.assert_allclose(np_ops.Linear.from_state(state, "lin")(x),
                               lin(torch.from_numpy(x)).detach().numpy(), atol=1e-5)
    w, b = _x(16, seed=1), _x(16, seed=2)
    np.testing.assert_allclose(np_ops.layer_norm(x, w, b),
                               F.layer_norm(torch.from_numpy(x), (16,), torch.from_numpy(w),
                                            torch.from_numpy(b)).numpy(), atol=2e-5)
    np.testing.assert_allclose(np_ops.silu(x), F.silu(torch.from_numpy(x)).numpy(), atol=1e-6)
    np.testing.assert_allclose(np_ops.softmax(x), torch.softmax(torch.from_numpy(x), -1).numpy(), atol=1e-7)
    q, k, v = _x(2, 3, 5, 8, seed=3), _x(2, 3, 9, 8, seed=4), _x(2, 3, 9, 8, seed=5)
    mask = np.where(np.random.default_rng(6).random((5, 9)) < 0.3, -1e30, 0).astype(np.float32)
    mask[:, 0] = 0
    ref = F.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v)),
                                         attn_mask=torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(np_ops.attention(q, k, v, mask), ref, atol=2e-5)


def test_gelu_in_place_blocks_and_float64():
    x = _x(3, 40000, seed=7)                             # over one block (32768 values)
    want = F.gelu(torch.from_numpy(x)).numpy()
    y = x.copy()
    assert np_ops.gelu(y, out=y) is y
    np.testing.assert_allclose(y, want, atol=5e-7, rtol=3e-7)
    x64 = x[0, :500].astype(np.float64)
    np.testing.assert_allclose(np_ops.gelu(x64), F.gelu(torch.from_numpy(x64)).numpy(), atol=1e-12, rtol=1e-7)
    assert np_ops.gelu(x64).dtype == np.float64


def test_attention_scale_and_a_mask_that_widens():
    q, k, v = _x(4, 8, seed=8), _x(6, 8, seed=9), _x(6, 8, seed=10)
    mask = np.where(np.random.default_rng(11).random((2, 4, 6)) < 0.3, -1e30, 0).astype(np.float32)
    mask[..., 0] = 0
    tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
    ref = (torch.softmax(tq @ tk.T * 0.7 + torch.from_numpy(mask), -1) @ tv).numpy()
    got = np_ops.attention(q, k, v, mask, scale=0.7)
    assert got.shape == (2, 4, 8)
    np.testing.assert_allclose(got, ref, atol=2e-5)
    np.testing.assert_allclose(np_ops.attention(q * np.float32(0.7), k, v, scale=1.0),
                               np_ops.attention(q, k, v, scale=0.7), atol=1e-5)
