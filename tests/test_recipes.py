"""The Vim configs reproduce the official runs field by field (docs/recipes.md), and the optimizer
presets reproduce the official parameter groups as they applied.

The expected values are the official ones, written here from the official files (named beside each);
the optimizer expectations are transcriptions of the official group rules:
``seg/mmcv_custom/layer_decay_optimizer_constructor.py`` (hustvl/Vim) and detectron2's
``get_default_optimizer_params`` with ``get_vim_lr_decay_rate`` (hustvl/Vim ``det/``).
"""
import pytest
import torch
from mmengine.optim import build_optim_wrapper

import mmvssm  # noqa: F401
from dense_helpers import build_model, det_train_step, load_config

SEG = {  # seg/configs/vim/upernet/upernet_vim_{tiny,small}_24_512_slide_60k.py + seg/scripts/ft_vim_*.sh
    'tiny': dict(lr=2e-4, wd=0.1, rate=0.92, feature='mixer', rope=False, fp32=False, dims=192),
    'small': dict(lr=1e-4, wd=0.05, rate=0.95, feature='residual', rope=True, fp32=True, dims=384),
}
DET = {'tiny': 192, 'small': 384}  # det/projects/ViTDet/configs/COCO/cascade_mask_rcnn_vimdet_{t_..._adj1,s}


def official_seg_groups(name: str, param: torch.Tensor, base_lr: float, base_wd: float, rate: float,
                        num_layers: int):
    """lr and wd of one parameter under the official seg LayerDecayOptimizerConstructor."""
    max_layer = num_layers + 2
    if name in ('backbone.cls_token', 'backbone.mask_token', 'backbone.pos_embed'):
        layer_id = 0
    elif name.startswith('backbone.patch_embed'):
        layer_id = 0
    elif name.startswith('backbone.blocks'):
        layer_id = int(name.split('.')[2]) + 1
    else:
        layer_id = max_layer - 1
    no_decay = len(param.shape) == 1 or name.endswith('.bias') or name in ('pos_embed', 'cls_token')
    return base_lr * rate ** (max_layer - layer_id - 1), 0. if no_decay else base_wd


def official_det_groups(name: str, base_lr: float, base_wd: float, rate: float, num_layers: int):
    """lr and wd of one parameter under detectron2 + get_vim_lr_decay_rate (official Vim det)."""
    layer_id = num_layers + 1
    if name.startswith('backbone'):
        if '.pos_embed' in name or '.patch_embed' in name:
            layer_id = 0
        elif '.layers.' in name and '.residual.' not in name:
            layer_id = int(name[name.find('.layers.'):].split('.')[2]) + 1
    # overrides={'pos_embed': {'weight_decay': 0}}; no torch norm class in the official model
    wd = 0. if name.split('.')[-1] == 'pos_embed' else base_wd
    return base_lr * rate ** (num_layers + 1 - layer_id), wd


def groups_of(model: torch.nn.Module, optim_wrapper: dict):
    wrapper = build_optim_wrapper(model, optim_wrapper)
    out = {}
    for group in wrapper.optimizer.param_groups:
        for name in group['param_names']:
            out[name] = (group['lr'], group['weight_decay'])
    assert len(out) == len(list(model.parameters()))
    return out


def reduced(config: str, depth: int = 4, dims: int = 16, **overrides):
    """The config with a ``depth``-layer Vim of width ``dims`` (heads shrunk to fit)."""
    return load_config(config, {'model.backbone.arch.embed_dims': dims, 'model.backbone.arch.depth': depth,
                                'model.backbone.scan_backend': 'reference',
                                'model.backbone.out_indices': list(range(depth)),
                                'optim_wrapper.paramwise_cfg.num_layers': depth, **overrides})


# ------------------------------------------------------------------------------------------ seg
@pytest.mark.parametrize('size', ['tiny', 'small'])
def test_upernet_configs_equal_the_official_runs(size):
    exp = SEG[size]
    cfg = load_config(f'upernet_vim_{size}_ade20k.py')
    bb, opt = cfg.model.backbone, cfg.optim_wrapper
    assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay, opt.optimizer.betas) == \
        ('AdamW', exp['lr'], exp['wd'], (0.9, 0.999))
    assert opt.paramwise_cfg == dict(num_layers=24, layer_decay_rate=exp['rate'], preset='vim_seg_as_run')
    assert (bb.feature, bb.rope, bb.rope_residual, bb.residual_in_fp32) == \
        (exp['feature'], exp['rope'], exp['rope'], exp['fp32'])
    assert (bb.arch, bb.img_size, bb.patch_size, tuple(bb.out_indices), bb.drop_path_rate) == \
        (dict(embed_dims=exp['dims'], depth=24), 512, 16, (5, 11, 17, 23), 0.1)
    assert not bb.with_cls_token and not bb.final_norm
    head = cfg.model.decode_head
    assert head.channels == exp['dims'] and head.in_channels == [exp['dims']] * 4
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(512, 512), stride=(341, 341))
    assert cfg.train_cfg.max_iters == 60000 and cfg.train_dataloader.batch_size == 8
    variant = load_config(f'upernet_vim_{size}_ade20k_per-layer-decay.py')
    assert variant.optim_wrapper.paramwise_cfg.preset == 'per_layer'
    assert variant.model == cfg.model


@pytest.mark.parametrize('size', ['tiny', 'small'])
def test_seg_as_run_preset_gives_the_official_parameter_groups(size):
    cfg = reduced(f'upernet_vim_{size}_ade20k.py', **{
        'model.decode_head.in_channels': [16] * 4, 'model.decode_head.channels': 16,
        'model.auxiliary_head.in_channels': 16})
    model = build_model(cfg.model, 'mmseg')
    got = groups_of(model, cfg.optim_wrapper)
    opt = cfg.optim_wrapper.optimizer
    rate = cfg.optim_wrapper.paramwise_cfg.layer_decay_rate
    for name, param in model.named_parameters():
        lr, wd = official_seg_groups(name, param, opt.lr, opt.weight_decay, rate, 4)
        assert got[name] == pytest.approx((lr, wd)), name
    # what that means: the Vim layers are not decayed, the embeddings are, pos_embed and A_log get wd
    assert got['backbone.layers.0.mixer.in_proj.weight'][0] == opt.lr
    assert got['backbone.pos_embed'] == pytest.approx((opt.lr * rate ** 5, opt.weight_decay))
    assert got['backbone.layers.0.mixer.A_log'][1] == opt.weight_decay
    # the corrected variant decays per layer
    fixed = groups_of(model, load_config(f'upernet_vim_{size}_ade20k_per-layer-decay.py', {
        'optim_wrapper.paramwise_cfg.num_layers': 4}).optim_wrapper)
    assert fixed['backbone.layers.0.mixer.in_proj.weight'][0] == pytest.approx(opt.lr * rate ** 4)
    assert fixed['backbone.layers.0.mixer.A_log'][1] == 0.


def test_seg_schedule_is_mmcv_poly_with_linear_warmup():
    """mmcv 1.x: lr = base * (1 - t / 60000) * (r + (1 - r) * t / 1500) during the warm-up, the plain
    poly after it (the poly is not restarted when the warm-up ends)."""
    cfg = load_config('upernet_vim_tiny_ade20k.py')
    lrs = lr_trajectory(cfg.param_scheduler, range(60000))
    for t in (0, 1, 700, 1499, 1500, 1501, 30000, 59999):
        warm = 1e-6 + (1 - 1e-6) * t / 1500 if t < 1500 else 1.0
        assert lrs[t] == pytest.approx((1 - t / 60000) * warm, rel=1e-6), t


def lr_trajectory(schedulers_cfg, iters, base_lr: float = 1.0) -> list:
    """lr at each iteration of a run with ``base_lr`` under the configured schedulers."""
    from mmengine.registry import PARAM_SCHEDULERS
    wrapper = build_optim_wrapper(torch.nn.Linear(1, 1), dict(optimizer=dict(type='SGD', lr=base_lr)))
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=wrapper)) for s in schedulers_cfg]
    lrs = []
    for _ in iters:
        lrs.append(wrapper.optimizer.param_groups[0]['lr'])
        for s in schedulers:
            s.step()
    return lrs


# ------------------------------------------------------------------------------------------ det
@pytest.mark.parametrize('size', ['tiny', 'small'])
def test_cascade_configs_equal_the_official_runs(size):
    cfg = load_config(f'cascade_mask_rcnn_vim_{size}_vitdet_100ep_coco.py')
    bb, opt = cfg.model.backbone, cfg.optim_wrapper
    assert (bb.arch, bb.img_size, tuple(bb.out_indices), bb.feature, bb.multi_scale) == \
        (dict(embed_dims=DET[size], depth=24), 1024, (23, ), 'residual', False)
    assert (bb.rope, bb.rope_residual, bb.rope_pt_grid, bb.residual_in_fp32, bb.drop_path_rate) == \
        (True, True, 14, True, 0.1)
    assert cfg.model.neck.type == 'SimpleFeaturePyramid' and cfg.model.neck.scale_factors == (4., 2., 1., .5)
    assert cfg.model.data_preprocessor.pad_size_divisor == 1024  # square_pad=1024
    assert (opt.type, opt.optimizer.lr, opt.optimizer.weight_decay) == ('AmpOptimWrapper', 1e-4, 0.1)
    assert opt.paramwise_cfg == dict(num_layers=24, layer_decay_rate=0.837, preset='vim_det_as_run')
    assert cfg.train_cfg.max_iters == 184375 and cfg.train_dataloader.batch_size * 4 == 64
    assert [s.get('milestones') for s in cfg.param_scheduler] == [None, [163889, 177546]]
    assert cfg.param_scheduler[0].end == 251 and cfg.param_scheduler[0].start_factor == 0.001
    # detectron2 WarmupParamScheduler (linear, factor 0.001, 250 iterations) x MultiStepParamScheduler
    lrs = lr_trajectory(cfg.param_scheduler, range(300))
    for t in (0, 1, 125, 249, 250, 251, 299):
        assert lrs[t] == pytest.approx(0.001 + 0.999 * t / 250 if t < 250 else 1.0, rel=1e-6), t
    heads = cfg.model.roi_head.bbox_head
    assert [h.norm_cfg.type for h in heads] == ['LN2d'] * 3
    assert cfg.model.roi_head.mask_head.norm_cfg.type == 'LN2d'
    assert all(h.reg_class_agnostic for h in heads)
    assert [a.assigner.pos_iou_thr for a in cfg.model.train_cfg.rcnn] == [0.5, 0.6, 0.7]
    resize = [t for t in cfg.train_pipeline if t.type == 'RandomResize'][0]
    assert resize.scale == (1024, 1024) and resize.ratio_range == (0.1, 2.0)


@pytest.mark.parametrize('size', ['tiny', 'small'])
def test_cascade_configs_build_full_size(size):
    cfg = load_config(f'cascade_mask_rcnn_vim_{size}_vitdet_100ep_coco.py',
                      {'model.backbone.scan_backend': 'reference'})
    model = build_model(cfg.model, 'mmdet', init_weights=False)
    assert type(model).__name__ == 'CascadeRCNN' and len(model.roi_head.bbox_head) == 3
    assert model.backbone.rope is not None and model.backbone.pos_embed.shape == (1, 64 * 64, DET[size])


def test_cascade_reduced_trains_one_iteration_and_det_preset_groups():
    cfg = reduced('cascade_mask_rcnn_vim_tiny_vitdet_100ep_coco.py', depth=2, dims=32, **{
        'model.backbone.out_indices': [1],
        'model.backbone.img_size': 128, 'model.neck.in_channels': 32,
        'model.data_preprocessor.pad_size_divisor': 128})
    for stage in cfg.model.train_cfg.rcnn:  # few RoIs: the heads' 256-channel convs dominate on CPU
        stage.sampler.num = 16
    cfg.model.train_cfg.rpn_proposal.max_per_img = 50
    model = build_model(cfg.model, 'mmdet')
    losses, data = det_train_step(model, 128, 96, batch=1, items=2)
    assert data['inputs'].shape[-2:] == (128, 128)  # padded to the square
    assert all(torch.isfinite(v).all() for k, v in losses.items() if 'loss' in k and torch.is_tensor(v))
    assert model.backbone.layers[0].mixer.in_proj.weight.grad is not None
    # detectron2's cascade: box losses of 3 stages weighted 1, one mask loss (first stage's samples)
    assert {k for k in losses if 'loss' in k and k[:2] in ('s0', 's1', 's2')} == {
        f's{i}.loss_{n}' for i in range(3) for n in ('cls', 'bbox')} | {'s0.loss_mask'}
    assert len(model.roi_head.mask_head) == 1 and model.roi_head.mask_head[0].convs[0].norm_name == 'ln'
    model.eval()
    with torch.no_grad():
        results = model.predict(data['inputs'], data['data_samples'])
    assert tuple(results[0].pred_instances.masks.shape[-2:]) == tuple(data['data_samples'][0].ori_shape)
    # the single mask head on given boxes (random weights may leave predict() without detections)
    from mmengine.structures import InstanceData
    boxes = InstanceData(bboxes=torch.tensor([[8., 8., 60., 90.], [0., 0., 30., 30.]]),
                         labels=torch.tensor([3, 7]), scores=torch.tensor([0.9, 0.8]))
    with torch.no_grad():
        feats = model.extract_feat(data['inputs'])
        masks = model.roi_head.predict_mask(feats, [data['data_samples'][0].metainfo], [boxes])
    assert masks[0].masks.shape[0] == 2 and masks[0].masks.dtype == torch.bool
    opt = cfg.optim_wrapper.optimizer
    got = groups_of(model, dict(cfg.optim_wrapper, type='OptimWrapper'))
    for name, _ in model.named_parameters():
        assert got[name] == pytest.approx(official_det_groups(name, opt.lr, opt.weight_decay, 0.837, 2)), name
    assert got['backbone.layers.0.norm.weight'][1] == opt.weight_decay  # RMSNorm decayed, as it ran


def test_cascade_head_scales_box_feature_gradients_by_stage_count():
    from mmvssm.models.heads.vitdet_cascade_roi_head import _ScaleGradient
    x = torch.randn(3, 4, requires_grad=True)
    y = _ScaleGradient.apply(x, 1 / 3)
    assert torch.equal(y, x)
    y.square().sum().backward()
    assert torch.allclose(x.grad, 2 * x.detach() / 3)
    cfg = load_config('cascade_mask_rcnn_vim_tiny_vitdet_100ep_coco.py')
    with pytest.raises(ValueError, match='one mask head'):
        build_model(dict(cfg.model.roi_head, mask_head=[cfg.model.roi_head.mask_head] * 3,
                         train_cfg=cfg.model.train_cfg.rcnn, test_cfg=cfg.model.test_cfg.rcnn), 'mmdet')


def test_simple_feature_pyramid_shapes_and_ln2d():
    from mmvssm.models.necks import LayerNorm2d, SimpleFeaturePyramid
    neck = SimpleFeaturePyramid(32, out_channels=8)
    outs = neck((torch.randn(2, 32, 8, 6), ))
    assert [tuple(o.shape) for o in outs] == [(2, 8, 32, 24), (2, 8, 16, 12), (2, 8, 8, 6), (2, 8, 4, 3),
                                              (2, 8, 2, 2)]
    assert all(m.bias is None for m in neck.modules() if isinstance(m, torch.nn.Conv2d))
    ln = LayerNorm2d(4)
    x = torch.randn(2, 4, 3, 5)
    ref = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (4, ), eps=1e-6).permute(0, 3, 1, 2)
    assert torch.allclose(ln(x), ref, atol=1e-6)
    with pytest.raises(ValueError, match='one map'):
        SimpleFeaturePyramid([32, 32])
    with pytest.raises(ValueError, match='scale factor 3'):
        SimpleFeaturePyramid(32, scale_factors=(3, ))


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match='unknown preset'):
        build_optim_wrapper(torch.nn.Linear(2, 2), dict(
            optimizer=dict(type='AdamW', lr=1.0), constructor='LayerDecayOptimWrapperConstructor',
            paramwise_cfg=dict(num_layers=2, layer_decay_rate=0.9, preset='official')))


# ------------------------------------------------------------------------------------------ EfficientViM
def test_efficient_vim_schedules_equal_mmcv_lr_config():
    """mlvlab/EfficientViM runs on mmcv 1.x: sem-FPN poly 0.9 to 1e-6 over 40k (no warm-up); detection
    linear warm-up 500 iterations from 0.001 (then steps by epoch)."""
    seg = load_config('fpn_efficient_vim_m4_ade20k_40k.py')
    base = seg.optim_wrapper.optimizer.lr
    lrs = lr_trajectory(seg.param_scheduler, range(40000), base)
    for t in (0, 1, 20000, 39999):
        assert lrs[t] == pytest.approx((base - 1e-6) * (1 - t / 40000) ** 0.9 + 1e-6, rel=1e-6), t
    for name in ('mask_rcnn_efficient_vim_m4_fpn_1x_coco.py', 'retinanet_efficient_vim_m4_fpn_1x_coco.py'):
        det = load_config(name)
        warm = [s for s in det.param_scheduler if s.type == 'LinearLR']
        lrs = lr_trajectory(warm, range(600))
        for t in (0, 1, 250, 499, 500, 599):
            assert lrs[t] == pytest.approx(0.001 + 0.999 * t / 500 if t < 500 else 1.0, rel=1e-6), (name, t)
