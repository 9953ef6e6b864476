"""Mixed precision: fp16 and bf16 autocast stay close to float32 for all three backbones (CPU autocast).

The networks are given realistic activation scales first: BatchNorm running statistics are measured on
random images (as training would), because an untrained network in eval mode keeps its init statistics
(mean 0, var 1) and its activations shrink ~3x per conv, to 1e-6..1e-12 in EfficientViM's later stages.
Those values lie below fp16's smallest subnormal (6e-8), so every fp16 implementation returns noise
there; this is what made EfficientViM look broken under fp16, not an overflow in the model.

The bound for each dtype is relative to what its rounding alone costs: the same float32 network run with
its weights and input rounded to the dtype. bf16 keeps 8 mantissa bits, so on random weights the
rounding alone moves the deepest outputs by several percent; autocast may add at most a small factor.
"""
import copy

import pytest
import torch

from mmvssm.models.backbones import EfficientViM, EfficientVMamba, Vim

TINY = {
    'Vim': lambda: Vim(arch=dict(embed_dims=96, depth=4), img_size=64, out_indices=(1, 3)),
    'EfficientVMamba': lambda: EfficientVMamba(arch=dict(dims=[32, 64, 128, 256], depths=[1, 1, 1, 1]),
                                               out_indices=(0, 1, 2, 3)),
    'EfficientViM': lambda: EfficientViM(arch=dict(embed_dims=[64, 96, 128], depths=[1, 2, 1],
                                                   state_dims=[16, 9, 4]), out_indices=(0, 1, 2)),
}
# Autocast may cost at most FACTOR x the error of rounding weights and input, and never more than CAP.
FACTOR = 3.0
CAP = {torch.float16: 0.03, torch.bfloat16: 0.15}


def _calibrated(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = TINY[name]()
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if batch_norms:
        for bn in batch_norms:
            bn.momentum = None  # cumulative average over the calibration batches
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(4, 3, 64, 64))
    return model.eval()


def _rel_errors(outs, refs):
    return [((o.float() - r).norm() / r.norm()).item() for o, r in zip(outs, refs)]


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['fp16', 'bf16'])
@pytest.mark.parametrize('name', sorted(TINY))
def test_autocast_close_to_float32(name, dtype):
    model = _calibrated(name)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=dtype):
            out = model(x)
        rounded = copy.deepcopy(model)
        for p in rounded.parameters():
            p.data = p.data.to(dtype).float()
        floor = _rel_errors(rounded(x.to(dtype).float()), ref)
    errors = _rel_errors(out, ref)
    assert all(torch.isfinite(o).all() for o in out)
    for level, (err, base) in enumerate(zip(errors, floor)):
        bound = min(CAP[dtype], max(FACTOR * base, 0.01))
        assert err <= bound, (f'{name} output {level}: autocast {dtype} rel. error {err:.3g} > {bound:.3g} '
                              f'(rounding weights and input alone: {base:.3g})')
