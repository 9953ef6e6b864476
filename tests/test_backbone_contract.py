"""The backbone contract of :class:`mmvssm.models.backbones.base.SSMBackbone`, checked for every backbone.

Each backbone is built at a tiny arch; a "stage" is a layer for Vim and a resolution level for the others.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import mmvssm  # noqa: F401  (registers the backbones)
import mmvssm.models.layers.checkpointing as checkpointing
from mmvssm.models.backbones import EfficientViM, EfficientVMamba, Vim
from mmvssm.models.backbones.base import SSMBackbone


@dataclass
class Spec:
    cls: type
    kwargs: dict  # a tiny arch and a CPU-exact scan backend
    num_stages: int
    num_blocks: int  # blocks that run in a forward with the default out_indices
    image_size: int
    stem: Callable[[SSMBackbone], List[nn.Module]]
    stage: Callable[[SSMBackbone, int], nn.Module]
    stem_params: Callable[[SSMBackbone], List[nn.Parameter]] = field(default=lambda m: [])

    def build(self, **kwargs) -> SSMBackbone:
        return self.cls(**dict(self.kwargs, **kwargs))

    def images(self, batch: int = 2) -> torch.Tensor:
        return torch.randn(batch, 3, self.image_size, self.image_size, generator=torch.Generator().manual_seed(0))


SPECS: Dict[str, Spec] = {
    'Vim': Spec(Vim, dict(arch=dict(embed_dims=16, depth=4), img_size=32, scan_backend='reference'),
                num_stages=4, num_blocks=4, image_size=32,
                stem=lambda m: [m.patch_embed], stage=lambda m, i: m.layers[i],
                stem_params=lambda m: [m.pos_embed]),
    'EfficientVMamba': Spec(EfficientVMamba, dict(arch=dict(dims=8, depths=[1, 1, 1, 1]), scan_backend='reference'),
                            num_stages=4, num_blocks=4, image_size=64,
                            stem=lambda m: [m.patch_embed], stage=lambda m, i: m.layers[i]),
    'EfficientViM': Spec(EfficientViM, dict(arch=dict(embed_dims=(16, 24, 32), depths=(1, 2, 1),
                                                      state_dims=(4, 3, 2))),
                         num_stages=3, num_blocks=4, image_size=64,
                         stem=lambda m: [m.patch_embed], stage=lambda m, i: m.stages[i]),
}
BACKBONES = pytest.mark.parametrize('spec', list(SPECS.values()), ids=list(SPECS))


def params_of(modules: List[nn.Module]) -> List[nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


# ------------------------------------------------------------------------------------------ out_indices
@BACKBONES
def test_negative_out_indices_are_normalised(spec):
    n = spec.num_stages
    model = spec.build(out_indices=(-2, -1))
    assert model.out_indices == (n - 2, n - 1)
    with torch.no_grad():
        assert len(model(spec.images())) == 2
    assert spec.build(out_indices=-1).out_indices == (n - 1, )


@BACKBONES
@pytest.mark.parametrize('case', ['unordered', 'duplicate', 'too_large', 'too_small', 'empty', 'not_int'])
def test_invalid_out_indices_name_the_valid_range(spec, case):
    n = spec.num_stages
    bad = {'unordered': (1, 0), 'duplicate': (1, 1 - n), 'too_large': (0, n), 'too_small': (-n - 1, ),
           'empty': (), 'not_int': (0.5, )}[case]
    with pytest.raises(ValueError, match=rf'{spec.cls.__name__}: out_indices.*') as err:
        spec.build(out_indices=bad)
    if case in ('too_large', 'too_small', 'empty', 'not_int'):
        assert f'0..{n - 1}' in str(err.value) and f'-{n}..-1' in str(err.value)


# ---------------------------------------------------------------------------------- frozen_stages
@BACKBONES
def test_frozen_stages_freeze_stem_and_first_stages_at_construction_and_through_train(spec):
    model = spec.build(frozen_stages=1)
    frozen = spec.stem(model) + [spec.stage(model, 0)]
    assert all(not p.requires_grad for p in params_of(frozen) + spec.stem_params(model))
    assert all(p.requires_grad for p in spec.stage(model, 1).parameters())
    model.train()
    assert all(not m.training for f in frozen for m in f.modules())
    assert spec.stage(model, 1).training

    model = spec.build(frozen_stages=-1)
    assert all(p.requires_grad for p in model.parameters())


@BACKBONES
def test_frozen_stages_beyond_the_model_is_refused(spec):
    with pytest.raises(ValueError, match='frozen_stages'):
        spec.build(frozen_stages=spec.num_stages + 1)
    with pytest.raises(ValueError, match='frozen_stages'):
        spec.build(frozen_stages=-2)


@BACKBONES
@pytest.mark.parametrize('norm_eval', [True, False])
def test_norm_eval_keeps_batch_norms_in_eval_mode(spec, norm_eval):
    model = spec.build(norm_eval=norm_eval).train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms, 'the tiny arch should hold BatchNorms'
    assert all(m.training != norm_eval for m in norms)


# ------------------------------------------------------------------------------------------- with_cp
@BACKBONES
def test_with_cp_checkpoints_each_block_and_changes_nothing_else(spec, monkeypatch):
    calls = []
    real = checkpointing.cp.checkpoint

    def counting(block, *args, **kwargs):
        calls.append(type(block).__name__)
        return real(block, *args, **kwargs)

    monkeypatch.setattr(checkpointing.cp, 'checkpoint', counting)
    torch.manual_seed(0)
    plain = spec.build().train()
    checkpointed = spec.build(with_cp=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    x = spec.images()
    outs = []
    for model in (plain, checkpointed):
        torch.manual_seed(1)  # same drop-path draws
        feats = model(x)
        sum(f.float().square().mean() for f in feats).backward()
        outs.append((feats, {k: p.grad for k, p in model.named_parameters() if p.grad is not None}))
    assert len(calls) == spec.num_blocks  # one checkpoint per block, none in the plain model
    for a, b in zip(outs[0][0], outs[1][0]):
        torch.testing.assert_close(a, b)
    assert outs[0][1].keys() == outs[1][1].keys()
    for k in outs[0][1]:
        torch.testing.assert_close(outs[0][1][k], outs[1][1][k], rtol=1e-4, atol=1e-6)

    calls.clear()
    with torch.no_grad():  # nothing to store: plain calls
        checkpointed(x)
    assert calls == []
    frozen_stem = spec.build(with_cp=True, frozen_stages=0).train()
    sum(f.sum() for f in frozen_stem(x)).backward()  # input needs no grad, the blocks' weights do
    assert len(calls) == spec.num_blocks


# ---------------------------------------------------------------------------------------------- arch
@BACKBONES
def test_arch_name_and_dict_with_the_same_keys_build_the_same_model(spec):
    name = sorted(spec.cls.arch_zoo)[0]
    by_name = spec.cls(arch=name.upper())
    by_dict = spec.cls(arch=dict(spec.cls.arch_zoo[name]))
    assert {k: v.shape for k, v in by_name.state_dict().items()} == \
        {k: v.shape for k, v in by_dict.state_dict().items()}


@BACKBONES
def test_bad_arch_is_refused_naming_the_choices(spec):
    keys = sorted(next(iter(spec.cls.arch_zoo.values())))
    with pytest.raises(ValueError, match='unknown arch') as err:
        spec.cls(arch='nonexistent')
    assert all(repr(name) in str(err.value) for name in spec.cls.arch_zoo)
    arch = dict(spec.kwargs['arch'])
    with pytest.raises(ValueError, match=rf"missing arch keys \['{keys[0]}'\]"):
        spec.cls(arch={k: v for k, v in arch.items() if k != keys[0]})
    with pytest.raises(ValueError, match=r"unknown arch keys \['width'\]"):
        spec.cls(arch=dict(arch, width=3))
    with pytest.raises(ValueError, match='arch'):
        spec.cls(arch=[1, 2])


# ------------------------------------------------------------------------------------------- weights
@BACKBONES
def test_weights_come_in_through_init_cfg(spec, tmp_path):
    source = spec.build()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.rand_like(p))
    path = str(tmp_path / 'weights.pth')
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()}}, path)
    model = spec.build(init_cfg=dict(type='Pretrained', checkpoint=path))
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))
    model.init_weights()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)
    # pretrained=PATH (what mmseg's segmentors hand their backbone) is shorthand for the same init_cfg
    shorthand = spec.build(pretrained=path)
    assert shorthand.init_cfg == dict(type='Pretrained', checkpoint=path)
    shorthand.init_weights()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(shorthand.state_dict()[key], value, msg=key)
    with pytest.raises(ValueError, match='either pretrained'):
        spec.build(pretrained=path, init_cfg=dict(type='Pretrained', checkpoint=path))


@BACKBONES
def test_images_of_the_wrong_shape_are_refused(spec):
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        spec.build()(torch.randn(1, 4, spec.image_size, spec.image_size))


@pytest.mark.parametrize('build, message', [
    (lambda: Vim(arch=dict(embed_dims='32', depth=4)), r"arch\['embed_dims'\] must be an int >= 1 .*got '32'"),
    (lambda: Vim(arch=dict(embed_dims=0, depth=4)), r"arch\['embed_dims'\] must be an int >= 1 .*got 0"),
    (lambda: Vim(arch=dict(embed_dims=32, depth=4, d_state=2.5)), r"arch\['d_state'\] must be an int >= 1"),
    (lambda: Vim(arch=dict(embed_dims=32, depth=4), patch_size=0), r'patch_size must be an int >= 1'),
    (lambda: EfficientViM(arch=dict(embed_dims=[32, 'a', 64], depths=[1, 1, 1], state_dims=[16, 9, 4])),
     r"arch\['embed_dims'\] must be a list of ints >= 1"),
])
def test_wrong_arch_values_are_value_errors_naming_the_field(build, message):
    with pytest.raises(ValueError, match=message):
        build()
