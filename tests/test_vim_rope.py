"""Vim RoPE (official ``if_rope`` / ``if_rope_residual``) against a float64 re-derivation written here.

The reference below is derived from the definition of the official ``VisionRotaryEmbeddingFast`` and the
official ``forward_features`` loop (hustvl/Vim ``vim/rope.py``, ``seg/backbone/vim.py``): complex rotation
of channel pairs by ``pos * w_k``, rows in the first half of the channels, columns in the second, and the
(hidden, residual) loop that rotates both before every layer and adds the last mixer output without
rotation (``last_layer_process='add'``). Mixer and norm modules are the model's own (their parity with
the official mixer is tested in test_vim.py); what is checked here is where and how RoPE acts.
"""
import math

import pytest
import torch

import mmvssm  # noqa: F401
from mmvssm.models.backbones.vim import Vim
from mmvssm.models.layers.rope import VisionRope, rope_tables

DIMS, PT = 16, 14


def rotate_reference(x: torch.Tensor, grid, pt: int = PT) -> torch.Tensor:
    """float64 rotation of tokens (B, h*w, D) in raster order, one token and pair at a time."""
    h, w = grid
    dims = x.shape[-1]
    half = dims // 2
    out = torch.empty_like(x, dtype=torch.float64)
    xd = x.double()
    for n in range(h * w):
        r, c = divmod(n, w)
        for k in range(half // 2):
            omega = 10000.0 ** (-2.0 * k / half)
            for base, pos in ((0, r / h * pt), (half, c / w * pt)):
                z = torch.complex(xd[:, n, base + 2 * k], xd[:, n, base + 2 * k + 1])
                z = z * complex(math.cos(pos * omega), math.sin(pos * omega))
                out[:, n, base + 2 * k], out[:, n, base + 2 * k + 1] = z.real, z.imag
    return out


def official_loop(model: Vim, images: torch.Tensor, rope_residual: bool, residual_feature: bool):
    """The official (hidden, residual) loop with RoPE, in float64, on the model's own weights."""
    tokens = model.patch_embed(images)  # (B, h, w, D)
    grid = tuple(tokens.shape[1:3])
    tokens = tokens.flatten(1, 2) + model._pos_embed_for(grid)
    hidden, residual = tokens, None
    feats = []
    for i, layer in enumerate(model.layers):
        hidden = rotate_reference(hidden, grid)
        if residual is not None and rope_residual:
            residual = rotate_reference(residual, grid)
        residual = hidden if residual is None else residual + hidden
        hidden = layer.mixer(layer.norm(residual))
        if residual_feature and i - 1 in model.out_indices:
            feats.append(residual)
        if not residual_feature and i in model.out_indices:
            feats.append(hidden)
    if residual_feature and model.depth - 1 in model.out_indices:
        feats.append(residual + hidden)  # last_layer_process='add'
    return [f.transpose(1, 2).reshape(f.shape[0], -1, *grid) for f in feats]


def rope_vim(**kwargs) -> Vim:
    kwargs = dict(dict(arch=dict(embed_dims=DIMS, depth=4), img_size=64, scan_backend='reference',
                       multi_scale=False, out_indices=(0, 1, 2, 3), rope=True, rope_residual=True,
                       drop_path_rate=0.1, residual_in_fp32=False), **kwargs)  # fp32 would downcast float64
    torch.manual_seed(0)
    return Vim(**kwargs).double().eval()


def test_rope_tables_equal_the_definition():
    """Rows rotate channels [0, D/2), columns [D/2, D); positions span [0, pt) for every grid size."""
    rope = VisionRope(DIMS, pt_grid=PT)
    x = torch.randn(2, 12, DIMS, dtype=torch.float64)
    for grid in ((3, 4), (4, 3), (2, 6)):
        ours = rope(x, grid)
        assert torch.allclose(ours, rotate_reference(x, grid), atol=1e-12, rtol=0), grid
    # a rotation: norms of each channel pair are kept, and the first token (position 0) is unchanged
    pairs = ours.unflatten(-1, (-1, 2)).norm(dim=-1)
    assert torch.allclose(pairs, x.unflatten(-1, (-1, 2)).norm(dim=-1))
    assert torch.equal(ours[:, 0], x[:, 0])


def test_rope_tables_bitwise_equal_official_buffers():
    """At the configured grid the fp32 tables equal the official buffers' computation (checkpoints'
    ``rope.freqs_{cos,sin}``): dim = D / 2, t = arange(ft) / ft * pt, pairs repeated, rows then columns."""
    dims, ft = 384, 32
    dim = dims // 2
    freqs = 1. / (10000 ** (torch.arange(0, dim, 2)[:(dim // 2)].float() / dim))
    t = torch.arange(ft) / ft * PT
    f = torch.einsum('..., f -> ... f', t, freqs).repeat_interleave(2, dim=-1)
    f = torch.cat([f[:, None, :].expand(ft, ft, -1), f[None, :, :].expand(ft, ft, -1)], dim=-1)
    cos, sin = rope_tables(dims, (ft, ft), PT)
    assert torch.equal(cos, f.cos().view(-1, dims)) and torch.equal(sin, f.sin().view(-1, dims))


@pytest.mark.parametrize('rope_residual,feature', [(True, 'residual'), (True, 'mixer'),
                                                   (False, 'residual')])
def test_vim_rope_forward_matches_official_loop(rope_residual, feature):
    model = rope_vim(rope_residual=rope_residual, feature=feature)
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        ours = model(images)
        ref = official_loop(model, images, rope_residual, feature == 'residual')
    assert len(ours) == len(ref) == 4
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-10, rtol=0), (a - b).abs().max()
    # and RoPE changes the output: the test would notice a model that ignores it
    plain = rope_vim(rope=False, rope_residual=False, feature=feature)
    with torch.no_grad():
        assert not torch.allclose(plain(images)[-1], ours[-1], atol=1e-3)


@pytest.mark.parametrize('hw', [(96, 96), (96, 80)])
def test_vim_rope_at_another_resolution_is_rebuilt_for_the_input_grid(hw):
    """Built at 64 (4x4 grid), run at 96x96 (6x6) and 96x80 (6x5): positions span [0, pt) on the new
    grid, i.e. the official module built with ft_seq_len = 6 (which is what rebuilding the official model
    at img_size 96 gives); the official module itself cannot run at another size."""
    model = rope_vim()
    images = torch.randn(1, 3, *hw, dtype=torch.float64)
    grid = (hw[0] // 16, hw[1] // 16)
    with torch.no_grad():
        ours = model(images)
        ref = official_loop(model, images, True, True)
    for a, b in zip(ours, ref):
        assert a.shape[-2:] == grid
        assert torch.allclose(a, b, atol=1e-10, rtol=0)
    cos, _ = model.rope.tables(grid, torch.device('cpu'))
    assert cos.shape == (grid[0] * grid[1], DIMS)


def test_dense_last_layer_adds_its_mixer_output_undropped():
    """Official dense backbones add the last mixer output without drop path (last_layer_process='add');
    the classifier (final_norm) drops it with the full rate, as the official model-level DropPath."""
    dense = Vim(arch=dict(embed_dims=DIMS, depth=4), drop_path_rate=0.3, scan_backend='reference')
    rates = [getattr(layer.drop_path, 'p', 0.) for layer in dense.layers]
    assert rates == pytest.approx([0., 0.1, 0.2, 0.])
    clf = Vim(arch=dict(embed_dims=DIMS, depth=4), drop_path_rate=0.3, final_norm=True, with_cls_token=True,
              out_type='raw', scan_backend='reference')
    assert clf.layers[-1].drop_path.p == pytest.approx(0.3)


def test_rope_with_checkpointing_and_grads():
    model = rope_vim().float().train()
    cp_model = rope_vim(with_cp=True).float().train()
    cp_model.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    images = torch.randn(1, 3, 64, 64, requires_grad=True)
    model.layers.apply(lambda m: setattr(m, 'p', 0.) if hasattr(m, 'p') else None)
    cp_model.layers.apply(lambda m: setattr(m, 'p', 0.) if hasattr(m, 'p') else None)
    outs = [m(images) for m in (model, cp_model)]
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-6)
    for m, o in zip((model, cp_model), outs):
        sum(t.square().sum() for t in o).backward()
    for (n, a), b in zip(model.named_parameters(), cp_model.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), n


def test_rope_arguments_are_checked():
    with pytest.raises(ValueError, match='rope_residual=True needs rope=True'):
        Vim(arch=dict(embed_dims=DIMS, depth=4), rope_residual=True)
    with pytest.raises(ValueError, match='with_cls_token'):
        Vim(arch=dict(embed_dims=DIMS, depth=4), rope=True, with_cls_token=True)
    with pytest.raises(ValueError, match='multiple of 4'):
        VisionRope(18)
    with pytest.raises(ValueError, match='class tokens must be removed'):
        VisionRope(DIMS)(torch.randn(1, 17, DIMS), (4, 4))


def test_rope_adds_no_state_and_keeps_parameter_counts():
    plain = Vim(arch='small', scan_backend='reference')
    with_rope = Vim(arch='small', scan_backend='reference', rope=True, rope_residual=True)
    assert plain.state_dict().keys() == with_rope.state_dict().keys()
    assert sum(p.numel() for p in with_rope.parameters()) == sum(p.numel() for p in plain.parameters())


def test_rope_checkpoints_load_without_their_buffers():
    """The official det/seg backbones' checkpoints carry rope.freqs_{cos,sin} (fixed tables): a RoPE model
    loads them without those; a model without RoPE, or a head-class-token (v1) checkpoint, is refused."""
    src = rope_vim().float()
    cos, sin = rope_tables(DIMS, (4, 4), PT)
    state = dict(src.state_dict(), **{'rope.freqs_cos': cos, 'rope.freqs_sin': sin})
    dst = rope_vim(residual_in_fp32=True).float()
    converted = dst.convert_checkpoint(state)
    assert not any(k.startswith('rope.') for k in converted)
    dst.load_state_dict(converted, strict=True)
    with pytest.raises(ValueError, match='build it with rope=True'):
        rope_vim(rope=False, rope_residual=False).convert_checkpoint(state)
    with pytest.raises(ValueError, match='head class token'):
        dst.convert_checkpoint(dict(state, cls_token=torch.zeros(1, 1, DIMS)))
