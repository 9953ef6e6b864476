"""Parameter and FLOP counting for mmvssm models (and any OpenMMLab model).

Counting rule (the one the papers use, via fvcore / mmengine's copy of it): **one multiply-add = one
FLOP**. Convolutions, linear layers, matmuls/bmm/einsum and (eval-mode) normalisations are counted by
mmengine's default handlers; element-wise ops (activations, additions, products, softmax, exp, ...) cost
nothing, as in the official ``flops()`` of VMamba/EfficientVMamba and EfficientViM. On top of that this
module counts the ops mmengine does not see:

* ``mmvssm.ops.selective_scan``: ``per_element * B*L*D*N`` (default 9, Mamba's estimate in
  state-spaces/mamba#110, the rule of VMamba's and EfficientVMamba's ``flops_selective_scan_fn``)
  ``+ B*D*L`` for the D skip ``+ B*D*L`` for the z gate when they are given. Here D is the scanned channel
  count (all directions folded in, as ``multi_direction_scan`` passes them) and L the sequence length.
* ``aten::scaled_dot_product_attention`` (fused attention, used by mmpretrain's ViT/DeiT on torch 2):
  ``q @ k^T`` plus ``attn @ v``, as if written with two matmuls; softmax free.
* ``aten::rms_norm``: like ``aten::layer_norm`` (5 per element with affine weight);
  ``aten::upsample_bicubic2d``: 16 per output element (mmengine prices bilinear at 4);
  ``aten::addcmul(_)``: 1 per output element (a depthwise-conv tap written as a multiply-add).

The scan is a Python function whose backends loop over time, so tracing through it would both be slow and
count the backend's internal matmuls. :func:`traceable_selective_scan` therefore routes every call to
``selective_scan`` through one registered torch op (``mmvssm_flops::selective_scan``) for the duration of
the count; the tracer records one node per call and :func:`selective_scan_flop_jit` prices it.
"""
import importlib
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from math import prod
from typing import (TYPE_CHECKING, Any, Callable, Counter, Dict, Iterator, List, Optional, Sequence,
                    Tuple, Union)

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import elementwise_flop_counter, get_shape, norm_flop_counter
from torch import Tensor, nn

if TYPE_CHECKING:
    from mmengine.config import Config

from mmvssm.ops import selective_scan as _selective_scan_fn

SCAN_OP_NAME = 'mmvssm_flops::selective_scan'
# Mamba's per-(b, l, d, n) estimate; see the module docstring.
DEFAULT_SCAN_FLOPS_PER_ELEMENT = 9

# Element-wise ops counted as free, as the official flops() of VMamba/EfficientVMamba and EfficientViM
# do (explicitly silenced so they are not reported as unsupported). Everything else that mmengine has no
# handler for is reported in ``FlopCount.unsupported``.
ZERO_COST_OPS = (
    'aten::abs', 'aten::add', 'aten::add_', 'aten::adaptive_avg_pool1d', 'aten::avg_pool1d',
    'aten::div', 'aten::div_', 'aten::exp', 'aten::flip', 'aten::gelu', 'aten::hardswish',
    'aten::hardsigmoid', 'aten::log', 'aten::mean', 'aten::mul', 'aten::mul_', 'aten::neg', 'aten::pow',
    'aten::rsqrt', 'aten::rsub', 'aten::sigmoid', 'aten::sigmoid_', 'aten::silu', 'aten::silu_',
    'aten::softmax', 'aten::softplus', 'aten::sqrt', 'aten::sub', 'aten::sum', 'aten::var',
    'aten::max_pool2d', 'aten::pad', 'aten::roll', 'aten::scatter', 'aten::index_select',
    'aten::repeat', 'aten::repeat_interleave', 'aten::type_as', 'aten::to', 'aten::tanh',
    'aten::feature_dropout', 'aten::dropout_',
    # not arithmetic
    'aten::empty_like', 'aten::numel', 'aten::zeros', 'aten::zeros_like', 'aten::lift_fresh', 'aten::fill_',
)


# --------------------------------------------------------------------------------------------------
# The selective scan as one traceable op
# --------------------------------------------------------------------------------------------------
@torch.library.custom_op(SCAN_OP_NAME, mutates_args=())
def _scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
             z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool, backend: str,
             compute: bool) -> Tuple[Tensor, Tensor]:
    # Always returns the last state too: a custom op needs a fixed output arity.
    if compute:
        return _selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                  return_last_state=True, backend=backend)
    # Shapes only: the count depends on nothing else, and the scan dominates CPU tracing time.
    return u.new_zeros(u.shape), u.new_zeros(u.shape[0], u.shape[1], A.shape[1])


def _make_traced_selective_scan(calls: List[Tuple[int, ...]], compute: bool) -> Callable:
    """A drop-in for ``selective_scan`` that runs inside one registered op.

    Each call appends ``u``'s shape to ``calls`` (to check that a model's scans were all seen).
    """

    def traced_selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                              D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                              delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                              return_last_state: bool = False, backend: str = 'auto'):
        calls.append(tuple(u.shape))
        y, last_state = _scan_op(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend,
                                 compute)
        return (y, last_state) if return_last_state else y

    return traced_selective_scan


@contextmanager
def traceable_selective_scan(compute: bool = True) -> Iterator[List[Tuple[int, ...]]]:
    """Within the block, every reference to ``mmvssm.ops.selective_scan`` calls one registered op.

    Backbones import the function by name (``from mmvssm.ops import selective_scan``), so each module
    holding a reference is patched (``multi_direction_scan`` looks it up in its own module, so it is
    covered too); all references are restored on exit. Yields the list of ``u`` shapes of the calls made.
    With ``compute=False`` the op returns zeros of the right shapes instead of scanning.
    """
    calls: List[Tuple[int, ...]] = []
    replacement = _make_traced_selective_scan(calls, compute)
    patched: List[Tuple[Dict[str, Any], str]] = []
    for module in list(sys.modules.values()):
        namespace = getattr(module, '__dict__', None)
        # This module keeps the original: the registered op calls it.
        if not isinstance(namespace, dict) or namespace is globals():
            continue
        for name, value in list(namespace.items()):
            if value is _selective_scan_fn:
                namespace[name] = replacement
                patched.append((namespace, name))
    try:
        yield calls
    finally:
        for namespace, name in patched:
            namespace[name] = _selective_scan_fn


# --------------------------------------------------------------------------------------------------
# FLOP handlers (mmengine/fvcore jit-handle signature: (inputs, outputs) -> count)
# --------------------------------------------------------------------------------------------------
def selective_scan_flops(batch: int, dim: int, length: int, n_state: int, with_d: bool = True,
                         with_z: bool = False,
                         per_element: float = DEFAULT_SCAN_FLOPS_PER_ELEMENT) -> int:
    """FLOPs of one selective scan: ``per_element*B*L*D*N`` (+ ``B*D*L`` each for the D skip, z gate)."""
    flops = per_element * batch * length * dim * n_state
    flops += batch * dim * length * (int(with_d) + int(with_z))
    return int(flops)


def _is_none(value: Any) -> bool:
    return isinstance(value.type(), torch._C.NoneType)


def selective_scan_flop_jit(inputs: List[Any], outputs: List[Any],
                            per_element: float = DEFAULT_SCAN_FLOPS_PER_ELEMENT) -> int:
    """Handle for ``mmvssm_flops::selective_scan`` nodes (inputs in the op's schema order)."""
    batch, dim, length = get_shape(inputs[0])
    n_state = get_shape(inputs[2])[1]
    return selective_scan_flops(batch, dim, length, n_state, with_d=not _is_none(inputs[5]),
                                with_z=not _is_none(inputs[6]), per_element=per_element)


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``scaled_dot_product_attention(q, k, v)``: q (..., L, E), k (..., S, E), v (..., S, Ev)."""
    q_shape, k_shape, v_shape = (get_shape(v) for v in inputs[:3])
    batch = prod(q_shape[:-2])
    length, embed = q_shape[-2:]
    source, value_dim = k_shape[-2], v_shape[-1]
    return batch * length * source * (embed + value_dim)


def flop_handles(scan_flops_per_element: float = DEFAULT_SCAN_FLOPS_PER_ELEMENT
                 ) -> Dict[str, Optional[Callable]]:
    """The handles :func:`count_flops` adds to mmengine's defaults (``None`` = free op)."""
    handles: Dict[str, Optional[Callable]] = {name: None for name in ZERO_COST_OPS}
    handles.update({
        SCAN_OP_NAME: partial(selective_scan_flop_jit, per_element=scan_flops_per_element),
        'aten::scaled_dot_product_attention': sdpa_flop_jit,
        'aten::rms_norm': norm_flop_counter(2),
        # 4x4 taps per output (mmengine prices bilinear at 2x2); used to resize position embeddings.
        'aten::upsample_bicubic2d': elementwise_flop_counter(0, 16),
        # one tap of a depthwise conv written as shifted multiply-adds (Vim's CPU conv1d): one MAC per
        # output element, as mmengine prices the same tap inside a convolution
        'aten::addcmul': elementwise_flop_counter(0, 1),
        'aten::addcmul_': elementwise_flop_counter(0, 1),
    })
    return handles


# --------------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------------
@dataclass
class FlopCount:
    """Result of :func:`count_flops`. ``flops`` are multiply-adds."""
    flops: int
    params: int
    by_operator: Counter = field(default_factory=Counter)
    by_module: Dict[str, int] = field(default_factory=dict)
    unsupported: Counter = field(default_factory=Counter)
    scan_calls: int = 0

    @property
    def scan_flops(self) -> int:
        return int(self.by_operator.get('selective_scan', 0))


class _TensorForward(nn.Module):
    """Calls an OpenMMLab ``BaseModel`` in ``mode='tensor'`` so the tracer sees a tensor-in model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Any:
        return self.model(x, _dummy_data_samples(self.model, x), mode='tensor')


def _dummy_data_samples(model: nn.Module, x: Tensor) -> Optional[list]:
    """mmdet's two-stage/RPN heads read image metas even in tensor mode; others need nothing."""
    if not type(model).__module__.startswith('mmdet.'):
        return None
    from mmdet.structures import DetDataSample
    shape = tuple(x.shape[-2:])
    meta = dict(img_shape=shape, ori_shape=shape, pad_shape=shape, batch_input_shape=shape,
                scale_factor=(1.0, 1.0))
    return [DetDataSample(metainfo=meta) for _ in range(x.shape[0])]


def _traceable(model: nn.Module) -> nn.Module:
    from mmengine.model import BaseModel
    return _TensorForward(model) if isinstance(model, BaseModel) else model


def build_model_from_cfg(cfg: Union[str, 'Config', dict]) -> nn.Module:
    """Build ``cfg.model`` (a config file, a ``Config``, or a bare model dict) in eval mode.

    The config's ``default_scope`` (mmpretrain/mmseg/mmdet) and ``custom_imports`` are honoured; mmvssm is
    always imported so its backbones are registered. SyncBN is turned into BN so the model runs on one CPU.
    """
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, DefaultScope
    from mmengine.utils import import_modules_from_strings

    import mmvssm  # noqa: F401  (registers the backbones)
    if isinstance(cfg, str):
        cfg = Config.fromfile(cfg)
    if isinstance(cfg, Config):
        if cfg.get('custom_imports'):
            import_modules_from_strings(**cfg.custom_imports)
        scope = cfg.get('default_scope')
        model_cfg = cfg.model
    else:
        scope, model_cfg = None, cfg
    if scope is not None:
        # Register the scope's modules without setting a global default scope (it would leak into
        # whatever the caller builds next); the scope is only in force while building.
        importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(scope):
        model = revert_sync_batchnorm(MODELS.build(model_cfg))
    model.eval()  # not chained: some OpenMMLab train() overrides return None
    return model


def default_input_shape(cfg: 'Config', fallback: int = 224) -> Tuple[int, int]:
    """The test-time input size of a config: the ``crop_size`` / ``scale`` of its test pipeline.

    Returns ``(fallback, fallback)`` when the pipeline does not fix one (e.g. keep-ratio resizes).
    """
    pipeline = (cfg.get('test_dataloader') or {}).get('dataset', {}).get('pipeline', [])
    size = None
    for step in pipeline:
        if step.get('type') == 'CenterCrop' and 'crop_size' in step:
            size = step['crop_size']
        elif step.get('type') == 'Resize' and not step.get('keep_ratio', False) and 'scale' in step:
            size = step['scale']
    if size is None:
        return fallback, fallback
    if isinstance(size, int):
        return size, size
    # mmcv/mmpretrain scales are (w, h).
    return int(size[1]), int(size[0])


def _strip_wrapper(by_module: Dict[str, int], wrapped: bool) -> Dict[str, int]:
    """Module names of the wrapped model, not of :class:`_TensorForward` ('model.backbone' -> 'backbone')."""
    if not wrapped:
        return {name: int(count) for name, count in by_module.items()}
    return {('' if name == 'model' else name[len('model.'):]): int(count)
            for name, count in by_module.items() if name.startswith('model')}


def count_flops(model: nn.Module,
                inputs: Union[Tensor, Sequence[Tensor]],
                scan_flops_per_element: float = DEFAULT_SCAN_FLOPS_PER_ELEMENT,
                compute_scan: bool = True) -> FlopCount:
    """Count parameters and FLOPs (multiply-adds) of ``model`` on ``inputs`` in eval mode.

    Args:
        model: any ``nn.Module``; mmengine ``BaseModel`` s (mmpretrain classifiers, mmseg segmentors,
            mmdet detectors) are called with ``mode='tensor'``.
        inputs: a tensor or a tuple of positional tensors (batch size 1 for per-image numbers).
        scan_flops_per_element: FLOPs per (b, l, d, n) element of the selective scan.
        compute_scan: run the real scan while tracing. False makes the scan return zeros of the right
            shapes: the count is the same (it depends on shapes only) and tracing is several times
            faster on CPU, but the traced outputs are not the model's.

    Returns:
        :class:`FlopCount`; ``by_module`` is keyed by the model's own module names ('' = total).
    """
    inputs = (inputs, ) if isinstance(inputs, Tensor) else tuple(inputs)
    params = int(parameter_count(model)[''])
    target = _traceable(model)
    was_training = model.training
    model.eval()
    try:
        with traceable_selective_scan(compute_scan) as scan_calls, torch.no_grad():
            analyzer = FlopAnalyzer(target, inputs)
            analyzer.set_op_handle(**flop_handles(scan_flops_per_element))
            analyzer.unsupported_ops_warnings(False)
            analyzer.uncalled_modules_warnings(False)
            analyzer.tracer_warnings('none')
            by_module = analyzer.by_module()  # traces the model once; later queries reuse the trace
    finally:
        model.train(was_training)
    return FlopCount(
        flops=int(analyzer.total()),
        params=params,
        by_operator=Counter(analyzer.by_operator()),
        by_module=_strip_wrapper(by_module, wrapped=target is not model),
        unsupported=Counter(analyzer.unsupported_ops()),
        scan_calls=len(scan_calls))
