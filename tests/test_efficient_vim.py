"""Tests of the EfficientViM backbone, fusion head, FPN neck, converter and configs (CPU, reduced sizes)."""
import importlib.util
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

from mmvssm.models.backbones.efficient_vim import HSMSSD, EfficientViM
from mmvssm.models.heads import EfficientViMFusionHead
from mmvssm.models.necks import EfficientViMFPN
from mmvssm.checkpoint import load_checkpoint_file

from dense_helpers import (assert_backbone_has_grads, build_model, det_predict, det_train_step, load_config,
                           seg_train_step)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Official checkpoint key layout (tests/fixtures/README.md says where it comes from).
KEYS_FILE = osp.join(osp.dirname(osp.abspath(__file__)), 'fixtures', 'efficient_vim_keys.txt')
SMALL = dict(embed_dims=(16, 24, 32), depths=(1, 2, 1), state_dims=(4, 3, 2))
SPEC_PARAMS = {'m1': 6_679_458, 'm2': 13_903_842, 'm3': 16_604_174, 'm4': 19_606_505}


def build_classifier(cfg_name: str, **overrides):
    # build_model's fixed scope: other tests may leave another one
    return build_model(load_config(f'imagenet/{cfg_name}', overrides).model, 'mmpretrain', init_weights=False)


@pytest.mark.parametrize('arch', ['m1', 'm2', 'm3', 'm4'])
def test_classifier_param_count_matches_spec(arch):
    model = build_classifier(f'efficient_vim_{arch}_in1k.py')
    assert sum(p.numel() for p in model.parameters()) == SPEC_PARAMS[arch]


def test_distilled_classifier_adds_four_heads_and_weights():
    model = build_classifier('efficient_vim_m1_dist_in1k.py')
    extra = sum(c * 1000 + 1000 for c in (128, 192, 320, 320)) + 4  # dist linears + weights_dist
    assert sum(p.numel() for p in model.parameters()) == SPEC_PARAMS['m1'] + extra  # 7.64M


# ----------------------------------------------------------------------------- HSM-SSD vs official form
def official_hsmssd(layer: HSMSSD, x: torch.Tensor):
    """Independent re-statement of the official layer, which assumes a square map (H = W = sqrt(L))."""
    batch, _, length = x.shape
    side = int(math.sqrt(length))
    n = layer.state_dim
    bcdt = F.conv1d(x, layer.BCdt_proj.conv.weight).view(batch, -1, side, side)
    bcdt = F.conv2d(bcdt, layer.dw.conv.weight, padding=1, groups=3 * n).flatten(2)
    b, c, dt = bcdt[:, :n], bcdt[:, n:2 * n], bcdt[:, 2 * n:]
    a = torch.softmax(dt + layer.A.view(1, -1, 1), dim=-1)
    h = torch.einsum('bdl,bnl->bdn', x, a * b)
    hz = F.conv1d(h, layer.hz_proj.conv.weight)
    h, z = hz[:, :layer.d_inner], hz[:, layer.d_inner:]
    h = F.conv1d(h * F.silu(z) + h * layer.D, layer.out_proj.conv.weight)
    return torch.einsum('bdn,bnl->bdl', h, c).view(batch, -1, side, side), h


def test_hsmssd_equals_official_square_form_and_handles_non_square():
    torch.manual_seed(0)
    layer = HSMSSD(dim=24, state_dim=5).eval()
    x = torch.randn(2, 24, 7 * 7)
    y, h = layer(x, (7, 7))
    y_ref, h_ref = official_hsmssd(layer, x)
    assert torch.allclose(y, y_ref, atol=1e-5) and torch.allclose(h, h_ref, atol=1e-5)

    # Non-square: a 4x6 map must be processed as 4 rows of 6 (row-major), i.e. equal the explicit 2-D
    # computation, and differ from reading the same tokens as 6x4 (the depthwise conv sees neighbours).
    x = torch.randn(1, 24, 4 * 6)
    y, _ = layer(x, (4, 6))
    assert y.shape == (1, 24, 4, 6)
    bcdt = layer.dw(layer.BCdt_proj(x).view(1, -1, 4, 6)).flatten(2)
    weights = torch.softmax(bcdt[:, 10:], -1) * bcdt[:, :5]
    hz = layer.hz_proj(x @ weights.transpose(1, 2))
    h = layer.out_proj(hz[:, :24] * F.silu(hz[:, 24:]) + hz[:, :24] * layer.D)
    assert torch.allclose(y, (h @ bcdt[:, 5:10]).view(1, 24, 4, 6), atol=1e-5)
    assert not torch.allclose(y.flatten(2), layer(x, (6, 4))[0].flatten(2), atol=1e-3)
    with pytest.raises(ValueError, match='do not form'):
        layer(x, (5, 5))


def test_A_cancels_in_the_softmax():
    torch.manual_seed(0)
    layer = HSMSSD(dim=16, state_dim=4).eval()
    x = torch.randn(1, 16, 36)
    y0, _ = layer(x, (6, 6))
    with torch.no_grad():
        layer.A.add_(torch.randn(4) * 5)
    assert torch.allclose(layer(x, (6, 6))[0], y0, atol=1e-5)


# ----------------------------------------------------------------------------- backbone
@pytest.mark.parametrize('hw', [(64, 64), (256, 384), (100, 77)])
def test_output_shapes_any_size(hw):
    model = EfficientViM(SMALL, return_hidden_states=True).eval()
    with torch.no_grad():
        outs, hidden = model(torch.randn(1, 3, *hw))
    size = list(hw)
    for i, (out, h) in enumerate(zip(outs, hidden)):
        size = [math.ceil(s / (16 if i == 0 else 2)) for s in size]
        assert out.shape == (1, SMALL['embed_dims'][i], *size)
        assert h.shape == (1, SMALL['embed_dims'][i], SMALL['state_dims'][i])


def test_batch_items_are_independent():
    """The token pooling is per image: no mixing across the batch dimension."""
    torch.manual_seed(0)
    model = EfficientViM(SMALL, out_indices=(2, )).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x)[0][1:], model(x[1:])[0], atol=1e-5)


def test_out_indices_out_norm_and_with_cp():
    torch.manual_seed(0)
    model = EfficientViM(SMALL, out_indices=(1, ), out_norm=True)
    assert hasattr(model, 'out_norm1') and not hasattr(model, 'out_norm0')
    x = torch.randn(2, 3, 64, 96)
    (out, ) = model(x)
    assert out.shape == (2, 24, 2, 3)
    assert torch.allclose(out.mean(1), torch.zeros(2, 2, 3), atol=1e-5)  # channel LayerNorm applied
    ref = EfficientViM(SMALL, out_indices=(1, ), out_norm=True, with_cp=True)
    ref.load_state_dict(model.state_dict())
    model.eval(), ref.eval()  # eval BN: identical maths
    x.requires_grad_(True)
    out_cp = ref(x)[0]
    out_cp.sum().backward()
    assert torch.allclose(model(x)[0], out_cp, atol=1e-5) and x.grad is not None


def test_frozen_stages_and_norm_eval():
    model = EfficientViM(SMALL, frozen_stages=1, norm_eval=True)
    model.train()
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.stages[0].parameters())
    assert all(p.requires_grad for p in model.stages[1].parameters())
    assert not model.stages[0].training and model.stages[1].training
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)
    model = EfficientViM(SMALL, frozen_stages=0)
    model.train()
    assert not model.patch_embed.training and model.stages[0].training
    assert all(p.requires_grad for p in model.stages[0].parameters())


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match='unknown arch'):
        EfficientViM('m9')
    with pytest.raises(ValueError, match='exactly the keys'):
        EfficientViM(dict(embed_dims=(16, 24), depths=(1, 1)))
    with pytest.raises(ValueError, match='same non-zero length'):
        EfficientViM(dict(embed_dims=(16, 24), depths=(1, 1), state_dims=(4, )))
    with pytest.raises(ValueError, match='divisible by 8'):
        EfficientViM(dict(embed_dims=(12, 24), depths=(1, 1), state_dims=(4, 4)))
    with pytest.raises(ValueError, match='out_indices'):
        EfficientViM(SMALL, out_indices=(3, ))
    with pytest.raises(ValueError, match='out_indices'):
        EfficientViM(SMALL, out_indices=(2, 1))
    with pytest.raises(ValueError, match='frozen_stages'):
        EfficientViM(SMALL, frozen_stages=4)
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        EfficientViM(SMALL)(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match='positive int'):
        EfficientViMFusionHead(0, (16, 24, 32))


def test_single_registration_reachable_from_all_registries():
    from mmdet.registry import MODELS as DET
    from mmpretrain.registry import MODELS as PRETRAIN
    from mmseg.registry import MODELS as SEG
    for name in ('EfficientViM', 'EfficientViMFusionHead', 'EfficientViMFPN'):
        assert name in ROOT_MODELS.module_dict
        for registry in (DET, SEG, PRETRAIN):
            assert name not in registry.module_dict
    for registry in (DET, SEG, PRETRAIN):
        assert type(registry.build(dict(type='EfficientViM', arch=SMALL))) is EfficientViM


# ----------------------------------------------------------------------------- official checkpoints
def official_state_dicts():
    """{arch: random state dict with the exact official keys/shapes/dtypes of the spec dump}."""
    result, arch = {}, None
    gen = torch.Generator().manual_seed(0)
    with open(KEYS_FILE) as f:
        for line in f:
            if line.startswith('====='):
                arch = line.split('_')[-1].strip().lower()
                result[arch] = {}
                continue
            key, rest = line.split(' ', 1)
            shape = tuple(int(s) for s in rest[rest.index('(') + 1:rest.index(')')].split(',') if s.strip())
            if 'int64' in rest:
                result[arch][key] = torch.tensor(7)
            elif key.endswith('running_var'):
                result[arch][key] = torch.rand(shape, generator=gen) + 0.5
            else:
                result[arch][key] = torch.randn(shape, generator=gen) * 0.2
    return result


@pytest.fixture(scope='module')
def official(tmp_path_factory):
    paths = {}
    for arch, state in official_state_dicts().items():
        path = str(tmp_path_factory.mktemp('ckpt') / f'EfficientViM_{arch.upper()}_dist.pth')
        torch.save({'model': state, 'epoch': 299, 'max_accuracy': 80.0}, path)
        paths[arch] = (path, state)
    return paths


@pytest.mark.parametrize('arch', ['m1', 'm4'])
def test_official_checkpoint_loads_into_backbone_without_missing_keys(official, arch):
    path, state = official[arch]
    model = EfficientViM(arch, init_cfg=dict(type='Pretrained', checkpoint=path))
    report = model.load_pretrained(path)
    assert report['missing_keys'] == [] and report['unexpected_keys'] == []
    assert len(report['restored']) == len(report['expected'])
    model = EfficientViM(arch, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    ours = model.state_dict()
    assert torch.equal(ours['stages.0.blocks.0.norm.weight'], state['stages.0.blocks.0.norm.weight'].flatten())
    backbone_keys = [k for k in state if k.startswith(('patch_embed.', 'stages.'))]
    assert sorted(backbone_keys) == sorted(ours)
    assert all(torch.equal(ours[k].flatten(), state[k].flatten()) for k in backbone_keys)


def test_foreign_or_mismatched_checkpoint_is_refused(official, tmp_path):
    with pytest.raises(ValueError, match='other shapes'):
        EfficientViM('m2').load_pretrained(official['m1'][0])
    path = str(tmp_path / 'other.pth')
    torch.save({'state_dict': {'conv1.weight': torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match='another model'):
        EfficientViM('m1').load_pretrained(path)
    with pytest.raises(ValueError, match='restored 0/'):  # a backbone-only file into the head
        EfficientViMFusionHead(1000, (128, 192, 320)).load_pretrained(
            _save(tmp_path / 'bb.pth', {k: v for k, v in official['m1'][1].items() if k.startswith('stages')}))


def _save(path, state):
    torch.save({'model': state}, str(path))
    return str(path)


def reference_logits(state, x, distilled, tmp_path):
    """M1 logits restated from the official fusion formula on the *official* state dict, with our backbone
    for the features (their parity with the official layer is checked above)."""
    backbone = EfficientViM('m1', return_hidden_states=True).eval()
    backbone.load_pretrained(_save(tmp_path / 'ref.pth', state))
    with torch.no_grad():
        maps, hidden = backbone(x)

    def ln(t, i):
        t = (t - t.mean(1, keepdim=True)) / torch.sqrt(t.var(1, keepdim=True, unbiased=False) + 1e-5)
        return t * state[f'norm.{i}.weight'] + state[f'norm.{i}.bias']

    feats = [ln(h, i).mean(-1) for i, h in enumerate(hidden)] + [ln(maps[-1], 3).mean((2, 3))]

    def fuse(prefix, weights):
        w = state[weights].softmax(-1)
        return sum(w[i] * F.linear(f, state[f'{prefix}.{i}.weight'], state[f'{prefix}.{i}.bias'])
                   for i, f in enumerate(feats))

    z = fuse('heads', 'weights')
    return (z + fuse('heads_dist', 'weights_dist')) / 2 if distilled else z


@pytest.mark.parametrize('distilled', [False, True])
def test_classifier_config_loads_official_checkpoint_and_gives_official_logits(official, tmp_path, distilled):
    path, state = official['m1']
    init = dict(type='Pretrained', checkpoint=path)
    model = build_classifier(f'efficient_vim_m1{"_dist" if distilled else ""}_in1k.py',
                             **{'model.backbone.init_cfg': init, 'model.head.init_cfg': init})
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, 64, 64)  # any size works; small keeps the test fast
    with torch.no_grad():
        logits = model(x, mode='tensor')
        assert logits.shape == (2, 1000)
        assert torch.allclose(logits, reference_logits(state, x, distilled, tmp_path), atol=1e-4)
        assert torch.equal(model.head.weights, state['weights'])


def test_converter_output_loads_strictly_into_classifier(official, tmp_path):
    spec = importlib.util.spec_from_file_location(
        'efficient_vim2mmvssm', osp.join(REPO, 'tools/model_converters/efficient_vim2mmvssm.py'))
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    path, _ = official['m1']
    dst = str(tmp_path / 'm1_dist_mmvssm.pth')
    converter.main([path, dst])
    converted = load_checkpoint_file(dst)
    assert converted['meta']['distilled'] is True
    model = build_classifier('efficient_vim_m1_dist_in1k.py')
    model.load_state_dict(converted['state_dict'], strict=True)
    with pytest.raises(ValueError, match='model_ema'):
        converter.main([path, dst, '--ema'])
    with pytest.raises(ValueError, match='not an official EfficientViM'):
        converter.convert({'model': {'conv1.weight': torch.zeros(1)}})


# ----------------------------------------------------------------------------- fusion head
def test_fusion_head_softmax_weighting_and_distillation_averaging():
    torch.manual_seed(0)
    backbone = EfficientViM(SMALL, return_hidden_states=True).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(2, 3, 64, 64))
    head = EfficientViMFusionHead(10, SMALL['embed_dims'], distillation=True)
    head.init_weights()
    assert torch.equal(head.weights, torch.ones(4))
    pooled = head.pre_logits(feats)
    assert [tuple(p.shape) for p in pooled] == [(2, 16), (2, 24), (2, 32), (2, 32)]
    with torch.no_grad():
        head.weights.copy_(torch.tensor([0., 1., 2., 3.]))
        head.weights_dist.copy_(torch.tensor([-50., -50., -50., 50.]))  # ~ only the map head
    head.train()
    z, z_dist = head(feats)
    w = torch.softmax(torch.tensor([0., 1., 2., 3.]), 0)
    expected = sum(w[i] * head.heads[i](pooled[i]) for i in range(4))
    assert torch.allclose(z, expected, atol=1e-5)
    assert torch.allclose(z_dist, head.heads_dist[3](pooled[3]), atol=1e-5)
    head.eval()
    assert torch.allclose(head(feats), (z + z_dist) / 2, atol=1e-5)
    with pytest.raises(NotImplementedError, match='teacher'):
        head.loss(feats, [])
    with pytest.raises(ValueError, match='return_hidden_states'):
        head(feats[0])


def test_classifier_trains_one_step_with_reduced_arch():
    from mmpretrain.structures import DataSample
    model = build_classifier('efficient_vim_m1_in1k.py', **{
        'model.backbone.arch': dict(SMALL, _delete_=True), 'model.head.in_channels': SMALL['embed_dims'],
        'model.head.num_classes': 10, 'model.train_cfg': None})
    model.init_weights()
    model.train()
    samples = [DataSample().set_gt_label(i) for i in (1, 3)]
    losses = model(torch.randn(2, 3, 64, 64), samples, mode='loss')
    losses['loss'].backward()
    assert model.head.weights.grad is not None and model.backbone.stages[2].blocks[0].alpha.grad is not None


# ----------------------------------------------------------------------------- neck and dense configs
@pytest.mark.parametrize('kwargs, strides', [
    (dict(num_extra_trans_convs=2), [4, 8, 16, 32, 64]),  # official Mask R-CNN
    (dict(num_extra_trans_convs=1, add_extra_convs='on_input'), [8, 16, 32, 64, 128]),  # RetinaNet
    (dict(), [16, 32, 64, 128, 256]),  # plain FPN with max-pool levels
])
def test_fpn_neck_pyramid_strides(kwargs, strides):
    neck = EfficientViMFPN([16, 24, 32], 8, num_outs=5, pre_norm=True, **kwargs)
    neck.init_weights()
    feats = [torch.randn(1, c, 256 // s, 512 // s) for c, s in zip([16, 24, 32], [16, 32, 64])]
    outs = neck(feats)
    assert [(o.shape[1], 256 // o.shape[2], 512 // o.shape[3]) for o in outs] == [(8, s, s) for s in strides]
    with pytest.raises(ValueError, match='num_outs'):
        EfficientViMFPN([16, 24, 32], 8, num_outs=4, num_extra_trans_convs=2)
    with pytest.raises(ValueError, match='inputs'):
        neck(feats[:2])


def reduced_config(name: str, **overrides) -> Config:
    """``configs/<name>`` with the SMALL arch and no pretrained weights."""
    return load_config(name, {'model.backbone.arch': dict(SMALL, _delete_=True), 'model.backbone.init_cfg': None,
                              **overrides})


@pytest.mark.parametrize('arch, dims', [('m1', [128, 192, 320]), ('m2', [128, 256, 512]),
                                        ('m3', [224, 320, 512]), ('m4', [224, 320, 512])])
def test_dense_configs_settings(arch, dims):
    seg = Config.fromfile(osp.join(REPO, f'configs/upernet_efficient_vim_{arch}_ade20k.py'))
    assert seg.model.backbone.arch == arch and seg.model.decode_head.in_channels == dims
    assert seg.model.auxiliary_head.in_channels == dims[1] and seg.model.backbone.norm_eval
    assert seg.model.backbone.init_cfg.checkpoint.endswith(f'EfficientViM_{arch.upper()}_e450.pth')
    det = Config.fromfile(osp.join(REPO, f'configs/mask_rcnn_efficient_vim_{arch}_fpn_1x_coco.py'))
    assert det.model.backbone.arch == arch and det.model.neck.in_channels == dims
    assert det.model.neck.num_extra_trans_convs == 2 and det.model.neck.pre_norm
    assert det.optim_wrapper.optimizer.lr == 2e-4 and det.optim_wrapper.optimizer.weight_decay == 0.05
    assert det.model.backbone.init_cfg.checkpoint.endswith(f'EfficientViM_{arch.upper()}_e450.pth')


def test_official_dense_setups():
    fpn = Config.fromfile(osp.join(REPO, 'configs/fpn_efficient_vim_m4_ade20k_40k.py'))
    assert fpn.model.neck.num_outs == 4 and fpn.model.decode_head.channels == 128
    assert fpn.optim_wrapper.optimizer.lr == 2e-4 and fpn.optim_wrapper.optimizer.weight_decay == 1e-4
    assert fpn.param_scheduler[0].power == 0.9 and fpn.train_cfg.max_iters == 40000
    retina = Config.fromfile(osp.join(REPO, 'configs/retinanet_efficient_vim_m4_fpn_1x_coco.py'))
    assert retina.model.neck.add_extra_convs == 'on_input' and retina.model.neck.num_extra_trans_convs == 1
    assert retina.model.bbox_head.anchor_generator.strides == [8, 16, 32, 64, 128]


def _seg_step(cfg: Config):
    model = build_model(cfg.model, 'mmseg')
    seg_train_step(model, 64, 96, batch=2)
    assert_backbone_has_grads(model.backbone)


def test_upernet_from_config_forward_backward():
    _seg_step(reduced_config('upernet_efficient_vim_m1_ade20k.py', **{
        'model.decode_head.in_channels': list(SMALL['embed_dims']), 'model.decode_head.channels': 32,
        'model.auxiliary_head.in_channels': SMALL['embed_dims'][1], 'model.auxiliary_head.channels': 16,
        'model.data_preprocessor.size': (64, 96)}))


def test_semantic_fpn_from_config_forward_backward():
    _seg_step(reduced_config('fpn_efficient_vim_m4_ade20k_40k.py', **{
        'model.neck.in_channels': list(SMALL['embed_dims']), 'model.neck.out_channels': 16,
        'model.decode_head.in_channels': [16] * 4, 'model.decode_head.channels': 16,
        'model.data_preprocessor.size': (64, 96)}))


@pytest.mark.parametrize('name', ['mask_rcnn_efficient_vim_m1_fpn_1x_coco.py',
                                  'retinanet_efficient_vim_m4_fpn_1x_coco.py'])
def test_detector_from_config_forward_backward(name):
    width = 32
    narrow = {'model.neck.in_channels': list(SMALL['embed_dims']), 'model.neck.out_channels': width}
    if 'retinanet' in name:
        narrow.update({'model.bbox_head.in_channels': width, 'model.bbox_head.feat_channels': width,
                       'model.bbox_head.stacked_convs': 1})
    else:
        narrow.update({
            'model.rpn_head.in_channels': width, 'model.rpn_head.feat_channels': width,
            'model.roi_head.bbox_roi_extractor.out_channels': width,
            'model.roi_head.bbox_head.in_channels': width, 'model.roi_head.bbox_head.fc_out_channels': 64,
            'model.roi_head.mask_roi_extractor.out_channels': width,
            'model.roi_head.mask_head.in_channels': width, 'model.roi_head.mask_head.conv_out_channels': width,
            'model.roi_head.mask_head.num_convs': 1, 'model.train_cfg.rcnn.sampler.num': 64})
    model = build_model(reduced_config(name, **narrow).model, 'mmdet')
    with_mask = 'mask' in name
    _, data = det_train_step(model, 64, 96, batch=2, items=2, with_mask=with_mask)
    assert_backbone_has_grads(model.backbone)
    assert not any(bn.training for bn in model.backbone.modules() if isinstance(bn, torch.nn.BatchNorm2d))
    results = det_predict(model, data)
    assert len(results) == 2 and (not with_mask or 'masks' in results[0].pred_instances)


def test_classifier_weight_decay_follows_official_rule():
    """Official rule: no decay on 1-D tensors and biases, but decay on alpha (4, C) and on LayerNorm
    weights (stored (1, C, 1) there): our flat LayerNorm weights must still be decayed."""
    from mmengine.optim import build_optim_wrapper
    model = build_classifier('efficient_vim_m1_in1k.py', **{
        'model.backbone.arch': dict(SMALL, _delete_=True), 'model.head.in_channels': SMALL['embed_dims']})
    cfg = Config.fromfile(osp.join(REPO, 'configs/imagenet/efficient_vim_m1_in1k.py')).optim_wrapper
    cfg.type = 'OptimWrapper'  # AMP needs a GPU
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        wrapper = build_optim_wrapper(model, cfg)
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups for p in g['params']}
    named = dict(model.named_parameters())
    decayed = {n for n, p in named.items() if decay[id(p)] > 0}
    assert {'backbone.stages.0.blocks.0.alpha', 'backbone.stages.0.blocks.0.norm.weight',
            'backbone.stages.0.blocks.0.ffn.fc1.conv.weight', 'head.heads.0.weight',
            'head.norm.3.weight'} <= decayed
    for name in ('backbone.stages.0.blocks.0.mixer.A', 'backbone.stages.0.blocks.0.mixer.D',
                 'head.weights', 'head.heads.0.bias', 'backbone.stages.0.blocks.0.norm.bias',
                 'backbone.patch_embed.conv.0.norm.weight', 'backbone.stages.0.downsample.conv.2.fc1.bias'):
        assert name not in decayed, name
