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
