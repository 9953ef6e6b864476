"""Tests of the Vim backbone, its pyramid, head, layer-decay constructor, converter and configs (CPU)."""
import argparse
import copy
import os.path as osp
import runpy
import sys

import pytest
import torch

import mmvssm  # noqa: F401  (registers everything)
from mmvssm.models.backbones.vim import Vim, official_to_classifier, resize_pos_embed
from mmvssm.checkpoint import atomic_save, load_policy

from dense_helpers import (assert_backbone_has_grads, build_model, det_train_step, load_config,
                           seg_train_step)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SMALL = dict(embed_dims=16, depth=4)  # D=16 -> E=32, dt_rank=1
BACKEND = 'reference'  # the slow-but-exact loop; sizes below keep it fast


def small_vim(**kwargs) -> Vim:
    kwargs.setdefault('arch', SMALL)
    kwargs.setdefault('scan_backend', BACKEND)
    kwargs.setdefault('img_size', 64)
    return Vim(**kwargs)


def official_state_dict(dims: int, depth: int, grid: int, seed: int = 0) -> dict:
    """Random weights in the official key layout (spec vim_detail.md §2), class entry at M // 2."""
    g = torch.Generator().manual_seed(seed)
    inner, rank, n = 2 * dims, -(-dims // 16), 16

    def rnd(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    sd = {'cls_token': rnd(1, 1, dims), 'pos_embed': rnd(1, grid * grid + 1, dims),
          'patch_embed.proj.weight': rnd(dims, 3, 16, 16, scale=0.02), 'patch_embed.proj.bias': rnd(dims),
          'head.weight': rnd(1000, dims), 'head.bias': rnd(1000)}
    for i in range(depth):
        p = f'layers.{i}.mixer.'
        for d in ('', '_b'):
            sd[p + f'A{d}_log'] = torch.rand(inner, n, generator=g).add(0.5).log()
            sd[p + f'D{d}'] = rnd(inner) + 1
            sd[p + f'conv1d{d}.weight'] = rnd(inner, 1, 4, scale=0.3)
            sd[p + f'conv1d{d}.bias'] = rnd(inner)
            sd[p + f'x_proj{d}.weight'] = rnd(rank + 2 * n, inner, scale=0.2)
            sd[p + f'dt_proj{d}.weight'] = rnd(inner, rank, scale=0.3)
            sd[p + f'dt_proj{d}.bias'] = rnd(inner) - 3
        sd[p + 'in_proj.weight'] = rnd(2 * inner, dims, scale=0.2)
        sd[p + 'out_proj.weight'] = rnd(dims, inner, scale=0.2)
        sd[f'layers.{i}.norm.weight'] = rnd(dims) + 1
    sd['norm_f.weight'] = rnd(dims) + 1
    return sd


# ---------------------------------------------------------------------------------------- structure
@pytest.mark.parametrize('arch,dims,expected', [('tiny', 192, 7_148_008), ('small', 384, 25_796_584),
                                                ('base', 768, 97_598_440)])
def test_classifier_param_count(arch, dims, expected):
    """The mmpretrain classifier of configs/imagenet (Base: the Tiny config at D=768) matches the spec."""
    name = 'tiny' if arch == 'base' else arch
    cfg = load_config(f'imagenet/vim_{name}_in1k.py',
                      {'model.backbone.arch.embed_dims': dims, 'model.head.in_channels': dims})
    model = build_model(cfg.model, 'mmpretrain', init_weights=False)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert len(model.backbone.state_dict()) == 413  # the official 415 keys minus head.weight/bias


def test_official_key_layout():
    sd = official_state_dict(16, 4, 4)
    model = small_vim(with_cls_token=True, final_norm=True, out_type='raw', img_size=64)
    own = model.state_dict()
    expected = {k: v.shape for k, v in sd.items() if not k.startswith('head.')}
    assert {k: v.shape for k, v in own.items()} == expected


@pytest.mark.parametrize('hw', [(512, 512), (512, 1024), (513, 771)])
def test_output_shapes(hw):
    model = small_vim(arch=dict(embed_dims=8, depth=4)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *hw))
    expected = [(1, 8, -(-hw[0] // s), -(-hw[1] // s)) for s in (4, 8, 16, 32)]
    assert [tuple(o.shape) for o in outs] == expected  # the stride-16 map is the plain token grid


def test_real_width_shapes_and_cls_outputs():
    model = Vim(dict(embed_dims=192, depth=1), img_size=64, out_indices=(0,), multi_scale=False,
            with_cls_token=True, scan_backend=BACKEND).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        fmap = model(x)[0]
        model.out_type = 'raw'
        raw = model(x)[0]
        model.out_type = 'cls_token'
        cls = model(x)[0]
    assert fmap.shape == (2, 192, 4, 3) and raw.shape == (2, 13, 192) and cls.shape == (2, 192)
    assert torch.equal(cls, raw[:, 6])  # M = 12 -> class token at index 6
    assert torch.equal(fmap.flatten(2).transpose(1, 2), torch.cat([raw[:, :6], raw[:, 7:]], 1))


# ---------------------------------------------------------------------------------------- pos embed
def test_pos_embed_interpolation():
    pos = torch.randn(1, 4 * 4 + 1, 8)
    assert resize_pos_embed(pos, (4, 4), (4, 4), True) is pos
    # Identity at the pretraining size also through interpolation itself (bicubic, same size).
    grid_only = torch.cat([pos[:, :8], pos[:, 9:]], 1)
    assert torch.allclose(resize_pos_embed(grid_only, (4, 4), (4, 4 + 0), False), grid_only)
    out = resize_pos_embed(pos, (4, 4), (5, 7), True)
    assert out.shape == (1, 36, 8) and torch.equal(out[:, 35 // 2], pos[:, 8])
    back = resize_pos_embed(grid_only, (4, 4), (8, 8), False)
    assert back.shape == (1, 64, 8)


def test_pos_cache_follows_weight_updates():
    model = small_vim(img_size=32).eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        first = model(x)
        again = model(x)
        assert all(torch.equal(a, b) for a, b in zip(first, again))
        state = copy.deepcopy(model.state_dict())
        state['pos_embed'] += 1.0
        model.load_state_dict(state)
        changed = model(x)
    assert not torch.allclose(first[2], changed[2])
    fresh = small_vim(img_size=32).eval()
    fresh.load_state_dict(state)
    with torch.no_grad():
        assert torch.allclose(fresh(x)[2], changed[2])


# ---------------------------------------------------------------------------------------- checkpoints
def test_official_checkpoint_loads_like_own_layout(tmp_path):
    sd = official_state_dict(16, 4, grid=4)  # pretrained at 64x64 -> 4x4 grid
    path = str(tmp_path / 'official.pth')
    atomic_save({'model': sd, 'model_ema': sd, 'args': argparse.Namespace(model='vim')}, path)

    dense = small_vim(img_size=128, init_cfg=dict(type='Pretrained', checkpoint=path))
    dense.init_weights()
    # Our own layout by hand: drop the class entry at M // 2 = 8, resize 4x4 -> 8x8, no head/norm_f.
    pos = torch.cat([sd['pos_embed'][:, :8], sd['pos_embed'][:, 9:]], 1)
    own = {k: v for k, v in sd.items() if not k.startswith(('head.', 'norm_f', 'cls_token'))}
    own['pos_embed'] = resize_pos_embed(pos, (4, 4), (8, 8), False)
    ref = small_vim(img_size=128)
    with load_policy(ref, fresh=('pyramid.', )):  # a partial load, said so to the load hooks
        missing, unexpected = ref.load_state_dict(own, strict=False)
    assert unexpected == [] and all(k.startswith('pyramid.') for k in missing)
    ref.pyramid.load_state_dict(dense.pyramid.state_dict())
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(dense.eval()(x), ref.eval()(x)))

    cls_model = small_vim(with_cls_token=True, final_norm=True, out_type='cls_token',
                          out_indices=(-1,), init_cfg=dict(type='Pretrained', checkpoint=path))
    report = cls_model.load_pretrained(path)
    assert report['missing_keys'] == [] and report['unexpected_keys'] == []
    for k, v in cls_model.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_converter_and_classifier_logits(tmp_path):
    sd = official_state_dict(16, 4, grid=4)
    src, dst = str(tmp_path / 'official.pth'), str(tmp_path / 'converted.pth')
    atomic_save({'model': sd, 'args': argparse.Namespace(model='vim')}, src)
    argv = sys.argv
    sys.argv = ['vim2mmvssm.py', src, dst]
    try:
        runpy.run_path(osp.join(REPO, 'tools/model_converters/vim2mmvssm.py'), run_name='__main__')
    finally:
        sys.argv = argv
    converted = torch.load(dst, weights_only=True)['state_dict']
    expected = official_to_classifier(sd)
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[k], v) for k, v in expected.items())
    clf = build_model(dict(
        type='ImageClassifier',
        backbone=dict(type='Vim', arch=SMALL, img_size=64, with_cls_token=True, final_norm=True,
                      out_type='raw', out_indices=(-1,), scan_backend=BACKEND),
        head=dict(type='VimClsHead', num_classes=1000, in_channels=16)), 'mmpretrain', init_weights=False)
    clf.load_state_dict(converted, strict=True)  # every key, head included
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = clf(x, mode='tensor')
        tokens = clf.backbone(x)[-1]
    assert torch.allclose(logits, tokens[:, 8] @ sd['head.weight'].T + sd['head.bias'], atol=1e-5)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match='unknown arch'):
        Vim('huge')
    with pytest.raises(ValueError, match='out of range'):
        Vim(SMALL, out_indices=(0, 4))
    with pytest.raises(ValueError, match=r"missing arch keys \['depth'\]"):
        Vim(dict(embed_dims=16))
    with pytest.raises(ValueError, match='in_channels'):
        small_vim()(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match='with_cls_token'):
        small_vim(out_type='cls_token')
    other = str(tmp_path / 'other.pth')
    atomic_save({'state_dict': {'conv1.weight': torch.zeros(4, 3, 3, 3)}}, other)
    with pytest.raises(ValueError, match='another model'):
        small_vim(init_cfg=dict(type='Pretrained', checkpoint=other)).init_weights()
    wrong_arch = str(tmp_path / 'small.pth')
    atomic_save({'model': official_state_dict(32, 4, 4)}, wrong_arch)
    with pytest.raises(ValueError, match='other shapes'):
        small_vim(init_cfg=dict(type='Pretrained', checkpoint=wrong_arch)).init_weights()


# ---------------------------------------------------------------------------------------- training
def test_frozen_stages():
    model = small_vim(frozen_stages=2)
    model.train()
    frozen = ['pos_embed', 'patch_embed.', 'layers.0.', 'layers.1.']
    for name, p in model.named_parameters():
        assert p.requires_grad != any(name.startswith(f) for f in frozen), name
    assert not model.layers[1].training and model.layers[2].training and not model.patch_embed.training
    with pytest.raises(ValueError, match='frozen_stages'):
        small_vim(frozen_stages=5)


def test_with_cp_same_outputs_and_grads():
    torch.manual_seed(0)
    plain = small_vim(out_indices=(1, 3), multi_scale=False, drop_path_rate=0.)
    ckpt = small_vim(out_indices=(1, 3), multi_scale=False, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 48)
    outs = [m.train()(x) for m in (plain, ckpt)]
    for a, b in zip(*outs):
        assert torch.allclose(a, b)
    for m, o in zip((plain, ckpt), outs):
        sum(t.square().sum() for t in o).backward()
    for (n, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), n


def test_layer_decay_lrs():
    from mmengine.optim import build_optim_wrapper

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = small_vim()
            self.decode_head = torch.nn.Linear(4, 4)

    model = Model()
    wrapper = build_optim_wrapper(model, dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05),
        constructor='LayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(num_layers=4, layer_decay_rate=0.5)))
    lr, wd = {}, {}
    for group in wrapper.optimizer.param_groups:
        for name in group['param_names']:
            lr[name], wd[name] = group['lr'], group['weight_decay']
    assert len(lr) == len(list(model.parameters()))
    assert lr['backbone.pos_embed'] == lr['backbone.patch_embed.proj.weight'] == 0.5 ** 5
    for i in range(4):
        assert lr[f'backbone.layers.{i}.mixer.in_proj.weight'] == 0.5 ** (4 - i)
    assert lr['backbone.pyramid.fpn1.0.weight'] == lr['decode_head.weight'] == 1.0
    assert wd['backbone.layers.0.mixer.in_proj.weight'] == 0.05
    for name in ('backbone.pos_embed', 'backbone.layers.0.mixer.A_log', 'backbone.layers.0.mixer.D',
                 'backbone.layers.0.norm.weight', 'decode_head.bias'):
        assert wd[name] == 0.0, name
    with pytest.raises(ValueError, match='num_layers'):
        build_optim_wrapper(model, dict(optimizer=dict(type='AdamW', lr=1.0),
                                        constructor='LayerDecayOptimWrapperConstructor',
                                        paramwise_cfg=dict(layer_decay_rate=0.5)))


# ---------------------------------------------------------------------------------------- frameworks
@pytest.mark.parametrize('scope', ['mmseg', 'mmdet', 'mmpretrain'])
def test_registry_fallback(scope):
    import importlib
    registry = importlib.import_module(f'{scope}.registry').MODELS
    model = registry.build(dict(type='Vim', arch=SMALL, scan_backend=BACKEND))
    assert isinstance(model, Vim)


def _reduced(config: str, dims: int = 16, **overrides) -> dict:
    """The model of ``configs/<config>`` with a 4-block Vim of width ``dims`` (all blocks as outputs)."""
    cfg = load_config(config, {'model.backbone.arch.embed_dims': dims, 'model.backbone.arch.depth': 4,
                               'model.backbone.out_indices': [0, 1, 2, 3],
                               'model.backbone.scan_backend': BACKEND, **overrides})
    return cfg.model


def test_upernet_config_forward_backward():
    cfg = _reduced('upernet_vim_tiny_ade20k.py', **{
        'model.decode_head.in_channels': [16] * 4, 'model.decode_head.channels': 16,
        'model.auxiliary_head.in_channels': 16, 'model.data_preprocessor.size': (64, 64)})
    model = build_model(cfg, 'mmseg')
    seg_train_step(model, 64, 64, batch=2)
    assert model.backbone.layers[0].mixer.in_proj.weight.grad is not None
    assert_backbone_has_grads(model.backbone)


def test_mask_rcnn_config_forward_backward():
    model = build_model(_reduced('mask_rcnn_vim_tiny_fpn_1x_coco.py', **{'model.neck.in_channels': [16] * 4}),
                        'mmdet')
    det_train_step(model, 96, 128, batch=1, items=1)
    assert model.backbone.layers[0].mixer.in_proj.weight.grad is not None
    assert_backbone_has_grads(model.backbone)


def test_upernet_slide_inference_any_size():
    # The real config tests with mmseg's slide mode; at reduced scale: 64x64 windows, stride 43, over a
    # 96x130 image, so windows overlap and the last row/column is shifted to the border.
    from mmseg.structures import SegDataSample
    cfg = _reduced('upernet_vim_tiny_ade20k.py', **{
        'model.decode_head.in_channels': [16] * 4, 'model.decode_head.channels': 16,
        'model.auxiliary_head.in_channels': 16, 'model.backbone.img_size': 32,
        'model.test_cfg.crop_size': (64, 64), 'model.test_cfg.stride': (43, 43)})
    assert cfg['test_cfg']['mode'] == 'slide'
    model = build_model(cfg, 'mmseg').eval()
    image = torch.rand(1, 3, 96, 130)
    sample = SegDataSample(metainfo=dict(img_shape=(96, 130), ori_shape=(96, 130), pad_shape=(96, 130)))
    with torch.no_grad():
        result = model.predict(image, [sample])[0]
        grid_64 = model.backbone._pos_embed_for((4, 4))
    assert result.pred_sem_seg.data.shape == (1, 96, 130)
    assert torch.isfinite(result.seg_logits.data).all()
    # every window used the 4x4 token grid: one cached resize of the 2x2 pretraining grid
    assert len(model.backbone._pos_cache) == 1 and next(iter(model.backbone._pos_cache))[0] == (4, 4)
    assert grid_64 is next(iter(model.backbone._pos_cache.values()))


def test_scan_backend_is_logged_and_validated(monkeypatch):
    """The run's log names the backend each device uses; a misspelt backend fails at build time."""
    from mmengine.logging import MMLogger
    logged = []
    logger = MMLogger.get_current_instance()
    monkeypatch.setattr(logger, 'log', lambda level, msg, *a, **k: logged.append(msg))
    small_vim(scan_backend='auto')
    assert any('Vim: selective scan backend' in m and 'cpu tensors -> ' in m for m in logged), logged
    with pytest.raises(ValueError, match="unknown backend 'fastest'"):
        small_vim(scan_backend='fastest')


def test_inference_cache_of_stacked_parameters_follows_the_weights():
    """Without autograd the mixer caches its stacked parameters; an in-place update, a load_state_dict or a
    dtype change must be seen, and training (autograd on) must never reuse the cache."""
    model = small_vim()
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        first = model(x)
        assert all(t.equal(r) for t, r in zip(model(x), first))  # cached path, same numbers
        mixer = model.layers[0].mixer
        mixer.x_proj.weight.mul_(1.5)
        mixer.A_b_log.add_(0.1)
        changed = model(x)
    fresh = model(x)  # autograd on: recomputed from the parameters
    for c, f, o in zip(changed, fresh, first):
        torch.testing.assert_close(c, f)
        assert not torch.allclose(c, o)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.load_state_dict({k: v * 1.01 if 'dt_proj_b.weight' in k else v for k, v in state.items()})
        reloaded = model(x)
    torch.testing.assert_close(list(reloaded), list(model(x)))
    assert not all(torch.allclose(r, f) for r, f in zip(reloaded, fresh))
