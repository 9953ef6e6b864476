"""The shared layers of mmvssm.models.layers: one implementation each, with the keys each model needs."""
import pytest
import torch
from torch import nn

from mmvssm.models.layers import (ChannelLayerNorm, PatchEmbed, SqueezeExcite, drop_path, init_dt_bias_,
                                  make_divisible, run_block)


@pytest.mark.parametrize('pad,hw,grid', [(True, (33, 50), (3, 4)), (False, (33, 50), (2, 3)),
                                         (True, (32, 48), (2, 3)), (False, (32, 48), (2, 3))])
def test_patch_embed_grid_with_and_without_padding(pad, hw, grid):
    embed = PatchEmbed(3, 8, 16, pad_to_patches=pad)
    out = embed(torch.randn(1, 3, *hw))
    assert out.shape == (1, *grid, 8) and embed.grid_size(hw) == grid
    if pad:  # the padded rows/columns are zeros: the first patch is the plain conv of the image corner
        x = torch.randn(1, 3, *hw)
        corner = embed.proj(x[..., :16, :16]).permute(0, 2, 3, 1)
        torch.testing.assert_close(embed(x)[:, :1, :1], corner)


def test_patch_embed_norm_and_keys():
    embed = PatchEmbed(3, 8, 4, norm=True)
    assert list(embed.state_dict()) == ['proj.weight', 'proj.bias', 'norm.weight', 'norm.bias']
    out = embed(torch.randn(2, 3, 16, 16))
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 4, 4), atol=1e-5, rtol=0)
    assert list(PatchEmbed(3, 8, 16).state_dict()) == ['proj.weight', 'proj.bias']
    with pytest.raises(ValueError, match='Vim: expected images'):
        PatchEmbed(3, 8, 16, owner='Vim')(torch.randn(1, 1, 32, 32))


@pytest.mark.parametrize('names', [('fc1', 'fc2'), ('conv_reduce', 'conv_expand')])
def test_squeeze_excite_keys_and_maths(names):
    se = SqueezeExcite(16, 4, conv_names=names)
    assert list(se.state_dict()) == [f'{names[0]}.weight', f'{names[0]}.bias', f'{names[1]}.weight',
                                     f'{names[1]}.bias']
    x = torch.randn(2, 16, 5, 7)
    reduce, expand = getattr(se, names[0]), getattr(se, names[1])
    gate = torch.sigmoid(expand(torch.relu(reduce(x.mean((2, 3), keepdim=True)))))
    torch.testing.assert_close(se(x), x * gate)
    assert make_divisible(16 * 4 * 0.25) == 16 and make_divisible(3) == 8


def test_channel_layer_norm_matches_layer_norm_over_channels():
    norm = ChannelLayerNorm(6)
    with torch.no_grad():
        norm.weight.uniform_()
        norm.bias.uniform_()
    ref = nn.LayerNorm(6)
    ref.load_state_dict(norm.state_dict())
    for x in (torch.randn(2, 6, 9), torch.randn(2, 6, 3, 4)):
        torch.testing.assert_close(norm(x), ref(x.movedim(1, -1)).movedim(-1, 1))


def test_drop_path():
    assert isinstance(drop_path(0.0), nn.Identity)
    layer = drop_path(0.5).train()
    out = layer(torch.ones(1000, 3))
    assert set(out[:, 0].tolist()) == {0.0, 2.0}  # per sample: dropped or rescaled
    for rate in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r'outside \[0, 1\)'):
            drop_path(rate)


def test_dt_bias_is_inverse_softplus_of_the_range():
    bias = init_dt_bias_(torch.empty(4, 1000), dt_min=1e-3, dt_max=0.1)
    dt = torch.nn.functional.softplus(bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001


def test_run_block_checkpoints_only_when_autograd_records(monkeypatch):
    import mmvssm.models.layers.checkpointing as checkpointing
    calls = []
    monkeypatch.setattr(checkpointing.cp, 'checkpoint', lambda block, *a, **k: calls.append(1) or block(*a))
    block = nn.Linear(3, 3)
    x = torch.randn(2, 3)  # needs no grad: the block's weights still do
    run_block(block, x, with_cp=True)
    assert calls == [1]
    with torch.no_grad():
        run_block(block, x, with_cp=True)
    run_block(block, x, with_cp=False)
    assert calls == [1]


def test_backbones_necks_and_heads_do_not_import_each_other():
    """Siblings share code through models/layers (and models/pretrained.py), never directly."""
    import ast
    import glob
    import os.path as osp
    models = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'mmvssm', 'models')
    siblings = ('backbones', 'necks', 'heads')
    found = []
    for owner in siblings:
        for path in glob.glob(osp.join(models, owner, '*.py')):
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.ImportFrom):
                    # resolve `from ..x import` / `from mmvssm.models.x import` to the sub-package x
                    parts = (node.module or '').split('.')
                    target = parts[0] if node.level == 2 else parts[2] if parts[:2] == ['mmvssm', 'models'] \
                        and len(parts) > 2 else None
                    if target in siblings and target != owner:
                        found.append(f'{owner}/{osp.basename(path)} imports {target}')
    assert not found, found


@pytest.mark.parametrize('name', ['Vim', 'EfficientVMamba'])
@pytest.mark.parametrize('rate', [-0.1, 1.0])
def test_drop_path_rate_outside_unit_interval_is_refused(name, rate):
    """Through the backbone, as a config would set it (outside our tools too)."""
    from mmvssm.models import backbones
    arch = dict(Vim=dict(embed_dims=16, depth=4), EfficientVMamba=dict(dims=[8, 16, 32, 64], depths=[1, 1, 1, 1]))
    extra = dict(Vim=dict(img_size=32), EfficientVMamba={})
    with pytest.raises(ValueError, match=r"drop_path_rate to a value in \[0, 1\)"):
        getattr(backbones, name)(arch=arch[name], drop_path_rate=rate * 4, **extra[name])
