"""EfficientVMamba backbone: exact model, atrous scan order, official checkpoints, dense configs."""
import importlib.util
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS as ROOT_MODELS

import mmvssm  # noqa: F401  (registers the backbone)
from mmvssm.models.backbones.efficient_vmamba import (EfficientVMamba, PatchMerging2D,
                                                      atrous_gather, atrous_scan_index,
                                                      atrous_scatter)

from dense_helpers import (assert_backbone_has_grads, build_model, det_predict, det_train_step, load_config,
                           seg_train_step)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Official checkpoint key layout (tests/fixtures/README.md says where it comes from).
KEYS_FILE = osp.join(osp.dirname(osp.abspath(__file__)), 'fixtures', 'efficient_vmamba_keys.txt')
SMALL = dict(dims=16, depths=[1, 1, 1, 1])  # widths 16, 32, 64, 128


def small_backbone(**kwargs) -> EfficientVMamba:
    kwargs.setdefault('drop_path_rate', 0.0)
    return EfficientVMamba(arch=SMALL, **kwargs)


# ------------------------------------------------------------------------------------------ model size
@pytest.mark.parametrize('arch,params', [('t', 6_493_660), ('s', 11_273_688), ('b', 33_717_136)])
def test_classifier_param_count_matches_official(arch, params):
    model = build_model(load_config(f'imagenet/efficient_vmamba_{arch}_in1k.py').model, 'mmpretrain',
                        init_weights=False)
    assert sum(p.numel() for p in model.parameters()) == params


def test_arch_zoo_and_drop_path_schedule():
    model = EfficientVMamba('b', drop_path_rate=0.2)
    assert model.dims == [96, 192, 384, 768] and model.depths == [2, 2, 9, 2]
    # rate 0 (the first block) is an Identity
    rates = [getattr(m.drop_path, 'p', 0.0) for layer in model.layers for m in layer.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.2, 15).tolist())
    # dims given as an int double per stage, as in the official code
    assert EfficientVMamba(dict(dims=48, depths=[2, 2, 4, 2])).dims == [48, 96, 192, 384]


# ---------------------------------------------------------------------------------- atrous scan order
def explicit_atrous_sequences(x: torch.Tensor) -> torch.Tensor:
    """The spec's slicing: k=0 row-major x[::2, ::2]; k=1 column-major x[1::2, ::2]; k=2 row-major
    x[::2, 1::2]; k=3 column-major x[1::2, 1::2] (after zero-padding odd sizes)."""
    height, width = x.shape[-2:]
    x = torch.nn.functional.pad(x, (0, width % 2, 0, height % 2))
    col_major = lambda t: t.transpose(-1, -2).flatten(-2)  # noqa: E731
    return torch.stack([x[..., 0::2, 0::2].flatten(-2), col_major(x[..., 1::2, 0::2]),
                        x[..., 0::2, 1::2].flatten(-2), col_major(x[..., 1::2, 1::2])], dim=1)


@pytest.mark.parametrize('hw', [(4, 4), (6, 8), (5, 7), (7, 4), (1, 1), (3, 10), (121, 64)])
@pytest.mark.parametrize('channels_last', [False, True])
def test_atrous_gather_scatter(hw, channels_last):
    x = torch.randn(2, 3, *hw)
    if channels_last:  # as a depthwise conv returns a map it was given channels-last
        x = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    x.requires_grad_(True)
    xs = atrous_gather(x)
    assert xs.shape == (2, 4, 3, ((hw[0] + 1) // 2) * ((hw[1] + 1) // 2))
    torch.testing.assert_close(xs, explicit_atrous_sequences(x), rtol=0, atol=0)
    # scatter is the exact inverse (positions placed, padding cropped), channels-last
    torch.testing.assert_close(atrous_scatter(xs, *hw), x.permute(0, 2, 3, 1), rtol=0, atol=0)
    # and its adjoint: the gradient of the gather is the scatter of the incoming gradient
    grad = torch.randn_like(xs)
    (xs * grad).sum().backward()
    torch.testing.assert_close(x.grad.permute(0, 2, 3, 1), atrous_scatter(grad, *hw))


def test_atrous_index_worked_example():
    # The detail spec's 4x4 example, (row, col) per token.
    expected = [[(0, 0), (0, 2), (2, 0), (2, 2)], [(1, 0), (3, 0), (1, 2), (3, 2)],
                [(0, 1), (0, 3), (2, 1), (2, 3)], [(1, 1), (3, 1), (1, 3), (3, 3)]]
    index, inverse = atrous_scan_index(4, 4)
    assert [[divmod(int(p), 4) for p in row] for row in index] == expected
    assert torch.equal(index.flatten()[inverse], torch.arange(16))
    with pytest.raises(ValueError, match='even'):
        atrous_scan_index(3, 4)


def test_patch_merging_pads_odd_sizes():
    merge = PatchMerging2D(4, 8)
    x = torch.randn(1, 5, 7, 4)
    padded = torch.nn.functional.pad(x, (0, 0, 0, 1, 0, 1))
    cat = torch.cat([padded[:, 0::2, 0::2], padded[:, 1::2, 0::2], padded[:, 0::2, 1::2],
                     padded[:, 1::2, 1::2]], -1)
    torch.testing.assert_close(merge(x), merge.reduction(merge.norm(cat)))
    assert merge(x).shape == (1, 3, 4, 8)


# ------------------------------------------------------------------------------------------- outputs
@pytest.mark.parametrize('hw,expected', [((64, 96), [(16, 24), (8, 12), (4, 6), (2, 3)]),
                                         ((225, 319), [(56, 79), (28, 40), (14, 20), (7, 10)])])
def test_output_shapes_and_strides(hw, expected):
    model = small_backbone().eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *hw))
    assert isinstance(outs, tuple)
    assert [tuple(o.shape) for o in outs] == [(1, c, *s) for c, s in zip([16, 32, 64, 128], expected)]
    assert all(o.is_contiguous() for o in outs)
    model = small_backbone(out_indices=(1, -1)).eval()
    with torch.no_grad():
        assert [o.shape[1] for o in model(torch.randn(1, 3, 32, 32))] == [32, 128]
    assert not hasattr(model, 'outnorm0')


def test_with_cp_matches_and_backward():
    torch.manual_seed(0)
    model = small_backbone()
    cp_model = small_backbone(with_cp=True)
    cp_model.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 36, requires_grad=True)
    outs, cp_outs = model(x), cp_model(x)
    for o, c in zip(outs, cp_outs):
        torch.testing.assert_close(o, c)
    sum(o.sum() for o in outs).backward()
    sum(o.sum() for o in cp_outs).backward()
    for (name, p), q in zip(model.named_parameters(), cp_model.parameters()):
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, msg=name)


# ------------------------------------------------------------------------------- freezing / norm_eval
def test_frozen_stages_and_norm_eval():
    model = small_backbone(frozen_stages=2, norm_eval=True)
    model.train()
    frozen = [model.patch_embed, model.layers[0], model.layers[1], model.outnorm0, model.outnorm1]
    for module in frozen:
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
    for module in (model.layers[2], model.layers[3], model.outnorm2):
        assert all(p.requires_grad for p in module.parameters())
    assert model.layers[2].blocks[0].conv_pw[0].training
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not bn.training for bn in bns)
    with pytest.raises(ValueError, match='frozen_stages'):
        small_backbone(frozen_stages=5)


# --------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_clear_errors():
    model = small_backbone()
    with pytest.raises(ValueError, match=r'in_channels'):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r"EfficientVMamba: unknown arch 'x'"):
        EfficientVMamba('x')
    with pytest.raises(ValueError, match='one positive width and depth per stage'):
        EfficientVMamba(dict(dims=[16, 32], depths=[1, 1, 1]))
    with pytest.raises(ValueError, match='unknown arch keys'):
        EfficientVMamba(dict(dims=16, depths=[1, 1, 1, 1], d_state=8))
    with pytest.raises(ValueError, match='out_indices'):
        small_backbone(out_indices=(4, ))


# --------------------------------------------------------------------------------- official weights
def official_shapes(arch_title: str) -> dict:
    """Key -> shape of one variant from the spec's listing of the official checkpoint."""
    shapes, current = {}, None
    with open(KEYS_FILE) as f:
        for line in f:
            line = line.strip()
            if line.startswith('#'):
                current = line[1:].strip()
            elif line and current == f'EfficientVMamba-{arch_title}':
                name, shape = line.split(' ', 1)
                shapes[name] = [int(s) for s in re.findall(r'\d+', shape)]
    return shapes


def random_official_state(arch_title: str, dense: bool = False) -> dict:
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in official_shapes(arch_title).items():
        if name.endswith('num_batches_tracked'):
            state[name] = torch.tensor(7)
        elif name.endswith('running_var'):
            state[name] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[name] = 0.1 * torch.randn(shape, generator=gen)
    if dense:  # Backbone_EfficientVSSM: outnorm{i}, no classifier
        dims = {'T': 48, 'S': 64, 'B': 96}[arch_title]
        state = {k: v for k, v in state.items() if not k.startswith('classifier.')}
        for i in range(4):
            state[f'outnorm{i}.weight'] = 1 + 0.1 * torch.randn(dims * 2 ** i, generator=gen)
            state[f'outnorm{i}.bias'] = 0.1 * torch.randn(dims * 2 ** i, generator=gen)
    return state


@pytest.fixture(scope='module')
def official_t(tmp_path_factory):
    """The official T layouts saved as the released files: EMA `module.module.` in `state_dict`."""
    root = tmp_path_factory.mktemp('ckpt')
    cls_state = random_official_state('T')
    cls_path, dense_path = str(root / 'cls_t.ckpt'), str(root / 'dense_t.pth')
    torch.save({'state_dict': {'module.module.' + k: v for k, v in cls_state.items()}}, cls_path)
    torch.save({'model': random_official_state('T', dense=True)}, dense_path)
    return cls_state, cls_path, dense_path


def test_spec_key_list_matches_our_model():
    for title, arch in (('T', 't'), ('S', 's'), ('B', 'b')):
        model = EfficientVMamba(arch, out_indices=(3, ))
        official = {k: torch.empty(s) for k, s in official_shapes(title).items()}
        converted = model.convert_checkpoint(official)
        own = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith('outnorm')}
        assert {k: tuple(v.shape) for k, v in converted.items()} == own


def test_official_checkpoints_load_and_match_our_layout(official_t, tmp_path):
    cls_state, cls_path, dense_path = official_t
    model = EfficientVMamba('t', drop_path_rate=0.0,
                            init_cfg=dict(type='Pretrained', checkpoint=cls_path))
    result = model.load_pretrained(cls_path)
    assert sorted(result['missing_keys']) == sorted(f'outnorm{i}.{p}' for i in range(4)
                                                    for p in ('weight', 'bias'))
    assert result['unexpected_keys'] == []
    torch.testing.assert_close(model.layers[2].blocks[0].conv_pw[0].weight,
                               cls_state['layers.2.1.conv_pw.0.weight'])
    torch.testing.assert_close(model.layers[2].downsample.reduction.weight,
                               cls_state['layers.2.6.reduction.weight'])
    torch.testing.assert_close(model.patch_embed.norm.bias, cls_state['patch_embed.2.bias'])

    # dense layout: everything incl. the outnorms, through init_cfg
    dense = EfficientVMamba('t', drop_path_rate=0.0,
                            init_cfg=dict(type='Pretrained', checkpoint=dense_path))
    dense.init_weights()
    ours_path = str(tmp_path / 'ours.pth')
    torch.save({'state_dict': dense.state_dict()}, ours_path)
    again = EfficientVMamba('t', drop_path_rate=0.0,
                            init_cfg=dict(type='Pretrained', checkpoint=ours_path))
    assert again.load_pretrained(ours_path)['missing_keys'] == []
    dense.eval(), again.eval()
    x = torch.randn(1, 3, 40, 36)
    with torch.no_grad():
        for a, b in zip(dense(x), again(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def load_converter():
    path = osp.join(REPO, 'tools/model_converters/efficient_vmamba2mmvssm.py')
    spec = importlib.util.spec_from_file_location('efficient_vmamba2mmvssm', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_converter_gives_official_classifier(official_t, tmp_path):
    cls_state, cls_path, _ = official_t
    dst = str(tmp_path / 'converted.pth')
    load_converter().main([cls_path, dst])
    classifier = build_model(load_config('imagenet/efficient_vmamba_t_in1k.py').model, 'mmpretrain',
                             init_weights=False).eval()
    classifier.load_state_dict(torch.load(dst)['state_dict'], strict=True)
    # official head: LayerNorm(classifier.norm) -> avgpool -> Linear(classifier.head)
    backbone = EfficientVMamba('t', out_indices=(3, ), drop_path_rate=0.0).eval()
    backbone.load_state_dict(classifier.backbone.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = backbone.layers[3](backbone.layers[2](backbone.layers[1](
            backbone.layers[0](backbone.patch_embed(x))[1])[1])[1])[0]
        pooled = torch.nn.functional.layer_norm(feats, (384, ), cls_state['classifier.norm.weight'],
                                                cls_state['classifier.norm.bias']).mean((1, 2))
        expected = pooled @ cls_state['classifier.head.weight'].t() + cls_state['classifier.head.bias']
        logits = classifier(x, mode='tensor')
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_foreign_checkpoints_are_refused(official_t, tmp_path):
    _, cls_path, _ = official_t
    with pytest.raises(ValueError, match='other shapes'):  # a T checkpoint into S
        EfficientVMamba('s').load_pretrained(cls_path)
    with pytest.raises(ValueError, match='another model'):  # T weights, B-like depths: too few restored
        EfficientVMamba(dict(dims=48, depths=[2, 2, 9, 2])).load_pretrained(cls_path)
    other = str(tmp_path / 'resnet.pth')
    torch.save({'state_dict': {'conv1.weight': torch.zeros(64, 3, 7, 7),
                               'fc.weight': torch.zeros(10, 64)}}, other)
    with pytest.raises(ValueError, match='another model'):
        EfficientVMamba('t').load_pretrained(other)


# ------------------------------------------------------------------------------ registries / configs
def test_single_registration_reachable_from_all_registries():
    from mmdet.registry import MODELS as DET
    from mmpretrain.registry import MODELS as PRETRAIN
    from mmseg.registry import MODELS as SEG
    assert 'EfficientVMamba' in ROOT_MODELS.module_dict
    for registry in (DET, SEG, PRETRAIN):
        assert 'EfficientVMamba' not in registry.module_dict
        model = registry.build(dict(type='EfficientVMamba', arch=SMALL))
        assert type(model) is EfficientVMamba


def reduced_config(name: str, **overrides) -> Config:
    """``configs/<name>`` with the SMALL arch and no pretrained weights."""
    return load_config(name, {'model.backbone.arch': SMALL, 'model.backbone.init_cfg': None, **overrides})


@pytest.mark.parametrize('arch', ['t', 's', 'b'])
def test_dense_configs_match_official_settings(arch):
    widths = {'t': [48, 96, 192, 384], 's': [64, 128, 256, 512], 'b': [96, 192, 384, 768]}[arch]
    seg = Config.fromfile(osp.join(REPO, f'configs/upernet_efficient_vmamba_{arch}_ade20k.py'))
    assert seg.model.backbone.arch == EfficientVMamba.arch_zoo[arch]
    assert seg.model.decode_head.in_channels == widths
    assert seg.model.auxiliary_head.in_channels == widths[2]
    assert seg.optim_wrapper.optimizer.lr == 6e-5 and seg.optim_wrapper.optimizer.weight_decay == 0.01
    det = Config.fromfile(osp.join(REPO, f'configs/mask_rcnn_efficient_vmamba_{arch}_fpn_1x_coco.py'))
    assert det.model.backbone.arch == EfficientVMamba.arch_zoo[arch]
    assert det.model.neck.in_channels == widths
    assert det.model.backbone.drop_path_rate == 0.2
    assert det.optim_wrapper.optimizer.lr == 1e-4 and det.optim_wrapper.optimizer.weight_decay == 0.05
    assert det.param_scheduler[0].end == 1000 and det.param_scheduler[1].milestones == [8, 11]


def test_upernet_from_config_forward_backward():
    cfg = reduced_config('upernet_efficient_vmamba_t_ade20k.py', **{
        'model.decode_head.in_channels': [16, 32, 64, 128], 'model.decode_head.channels': 32,
        'model.auxiliary_head.in_channels': 64, 'model.auxiliary_head.channels': 16,
        'model.data_preprocessor.size': (64, 64)})
    model = build_model(cfg.model, 'mmseg')
    seg_train_step(model, 64, 64, batch=2)
    assert_backbone_has_grads(model.backbone)


def test_mask_rcnn_from_config_forward_backward():
    cfg = reduced_config('mask_rcnn_efficient_vmamba_t_fpn_1x_coco.py', **{
        'model.neck.in_channels': [16, 32, 64, 128],
        # fewer RoIs: the heads are not under test, the backbone in them is
        'model.train_cfg.rpn_proposal.max_per_img': 64, 'model.train_cfg.rcnn.sampler.num': 32,
        'model.test_cfg.rpn.max_per_img': 64, 'model.test_cfg.rcnn.max_per_img': 10})
    model = build_model(cfg.model, 'mmdet')
    _, data = det_train_step(model, 64, 64, batch=2, items=2)
    assert_backbone_has_grads(model.backbone)
    results = det_predict(model, data)
    assert len(results) == 2 and 'masks' in results[0].pred_instances
