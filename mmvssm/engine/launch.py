"""Config preparation and input checks shared by ``tools/train.py`` and ``tools/test.py``.

The same tools serve mmseg and mmdet configs: the config's ``default_scope`` picks the registries.
The checks here run before mmengine builds anything, so a wrong path or name is reported as one line that
says what is wrong and how to fix it, instead of a traceback from deep inside a data loader or registry.
"""
import argparse
import logging
import os
import os.path as osp
from typing import Iterable, List, Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS, init_default_scope
from mmengine.runner import Runner

SUPPORTED_SCOPES = ('mmseg', 'mmdet')
# set by tools/dist_launch.sh when it hid the GPUs, so that the processes say why they run on the CPU
DIST_NOTE_ENV = 'MMVSSM_DIST_NOTE'
TINY_SAMPLE_HINT = ('generate the tiny sample with `python tools/misc/make_tiny_datasets.py --out '
                    'data/tiny`, or point the config at your copy with --cfg-options')


class ToolInputError(Exception):
    """A problem with the user's config, arguments or data; the tools print it without a traceback."""


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options both tools take, spelled as in mmseg's and mmdet's tools."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. train_cfg.max_iters=100 '
                        'model.backbone.arch.depth=4')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_tool_args(parser: argparse.ArgumentParser,
                    argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv`` and export ``LOCAL_RANK`` for mmengine when a launcher passed ``--local-rank``."""
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_config(path: str, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None) -> Config:
    """Read ``path``, apply ``--cfg-options`` and set ``work_dir`` (default ``work_dirs/<config name>``)."""
    if not osp.isfile(path):
        raise ToolInputError(f'config file {path!r} not found (cwd: {os.getcwd()}); pass the path of a '
                             f'config such as configs/tiny/upernet_vim_tiny_tiny-ade.py')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SUPPORTED_SCOPES:
        raise ToolInputError(f'{path}: default_scope is {scope!r}; these tools run mmseg and mmdet '
                             f"configs, so inherit configs/_base_/default_runtime_seg.py "
                             f"(default_scope='mmseg') or default_runtime_det.py (default_scope='mmdet')")
    check_top_level_keys(cfg, path)
    check_rates(cfg.get('model'), 'model', path)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg


# Top-level keys mmengine's Runner (and mmseg's/mmdet's tools) read, and the helper names their _base_
# files define; a key close to one of them but not equal (``optim_wraper``) is a misspelling that the
# Runner would silently ignore.
_HELPER_KEYS = ('train_pipeline', 'val_pipeline', 'test_pipeline', 'tta_pipeline', 'tta_model',
                'dataset_type', 'data_root', 'backend_args', 'img_scale', 'crop_size', 'norm_cfg',
                'data_preprocessor', 'custom_imports', 'runner_type', 'model_wrapper', 'pretrained',
                'load_policy')  # SafeCheckpointRunner's (mmvssm.checkpoint.runner)


def runner_keys() -> List[str]:
    import inspect
    return [name for name in inspect.signature(Runner.__init__).parameters if name != 'self']


def check_top_level_keys(cfg: Config, path: str) -> None:
    """Refuse a top-level key that looks like a misspelt Runner key (the Runner would ignore it)."""
    import difflib
    known = set(runner_keys()) | set(_HELPER_KEYS)
    for key in cfg.keys():
        if key in known or key.startswith('_'):
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8)
        if close:
            raise ToolInputError(f'{path}: unknown top-level key {key!r}; did you mean {close[0]!r}? '
                                 f'mmengine would ignore it silently. Rename it (or, for a helper '
                                 f'variable, give it a name further from the Runner keys: {close[0]!r})')


def check_rates(node, where: str, path: str) -> None:
    """Refuse a drop-path / dropout rate outside [0, 1) anywhere in the model config."""
    if isinstance(node, dict):
        for key, value in node.items():
            if (isinstance(key, str) and ('drop_path' in key or key.endswith(('dropout', 'drop_rate')))
                    and isinstance(value, (int, float)) and not isinstance(value, bool)
                    and not 0 <= value < 1):
                raise ToolInputError(f'{path}: {where}.{key}={value} is not a probability; give a '
                                     f'rate in [0, 1) (e.g. --cfg-options {where}.{key}=0.1)')
            check_rates(value, f'{where}.{key}', path)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_rates(value, f'{where}[{i}]', path)


def build_runner(cfg: Config) -> Runner:
    """The config's runner: mmengine's ``Runner`` unless the config names a ``runner_type``."""
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


def gpu_shortage(procs_per_node: int, gpus: Optional[int] = None) -> Optional[str]:
    """Why ``procs_per_node`` distributed processes cannot each have a GPU of their own, or None.

    NCCL (mmengine's backend on GPUs) needs one GPU per process, and mmengine puts process ``LOCAL_RANK``
    on GPU ``LOCAL_RANK``. None also when there is no GPU at all: then the processes run on the CPU anyway.
    ``gpus`` defaults to the GPUs this process sees.
    """
    gpus = torch.cuda.device_count() if gpus is None else gpus
    if gpus == 0 or procs_per_node <= gpus:
        return None
    return (f'{procs_per_node} processes per node but {gpus} GPU{"s" if gpus > 1 else ""} visible, and '
            f'NCCL needs one GPU per process (start at most {gpus} to train on the GPUs)')


def adapt_to_device(cfg: Config, launcher: str) -> None:
    """Let CUDA configs run on CPU-only machines, in one process or several (``--launcher pytorch``).

    Without CUDA: BatchNorm instead of SyncBN (which needs a GPU) and, when distributed, the gloo backend
    with DDP over CPU modules (``device_ids=None``). mmengine 0.10.7's ``init_dist`` calls
    ``torch.cuda.set_device`` unconditionally, so the gloo process group is created here from torchrun's
    environment; the Runner then finds it initialised and uses it.

    With CUDA, more processes per node than GPUs is refused with the fix: ``tools/dist_launch.sh`` hides
    the GPUs in that case (mmengine decides its device when imported, so it cannot be done here).
    """
    if torch.cuda.is_available():
        shortage = gpu_shortage(int(os.environ.get('LOCAL_WORLD_SIZE', '1'))) if launcher == 'pytorch' else None
        if shortage:
            raise ToolInputError(f'{shortage}; or run them on the CPU (gloo) with CUDA_VISIBLE_DEVICES= (empty), '
                                 f'which tools/dist_train.sh and tools/dist_test.sh set by themselves')
        return
    if _replace_sync_bn(cfg.get('model')):
        print_log('no CUDA device: SyncBN layers are built as BN (per-process statistics)',
                  logger='current')
    if launcher == 'none':
        return
    if launcher != 'pytorch':
        raise ToolInputError(f'--launcher {launcher} needs CUDA GPUs (mmengine selects one per process); '
                             f'on CPU start the processes with tools/dist_train.sh (torchrun)')
    note = os.environ.get(DIST_NOTE_ENV)
    print_log('no CUDA device: the distributed processes run on the CPU with the gloo backend'
              + (f' ({note})' if note else ''), logger='current', level=logging.WARNING if note else logging.INFO)
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend='gloo')


def _replace_sync_bn(node) -> bool:
    found = False
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
            found = True
        for value in node.values():
            found = _replace_sync_bn(value) or found
    elif isinstance(node, (list, tuple)):
        for value in node:
            found = _replace_sync_bn(value) or found
    return found


def _innermost_datasets(dataset_cfg: dict) -> List[dict]:
    """The leaf dataset configs inside wrappers such as RepeatDataset or ConcatDataset."""
    if 'dataset' in dataset_cfg:
        return _innermost_datasets(dataset_cfg['dataset'])
    if 'datasets' in dataset_cfg:
        return [leaf for d in dataset_cfg['datasets'] for leaf in _innermost_datasets(d)]
    return [dataset_cfg]


def check_data(cfg: Config, loaders: Sequence[str]) -> None:
    """Check that the data roots, annotation files and image folders the ``loaders`` use exist."""
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not loader_cfg or 'dataset' not in loader_cfg:
            continue
        for dataset in _innermost_datasets(loader_cfg['dataset']):
            _check_dataset_paths(f'{loader}.dataset', dataset)
    evaluators = [loader.replace('_dataloader', '_evaluator') for loader in loaders]
    for name in evaluators:
        for evaluator in _as_list(cfg.get(name)):
            ann_file = evaluator.get('ann_file') if isinstance(evaluator, dict) else None
            if ann_file and '://' not in ann_file and not osp.isfile(ann_file):
                raise ToolInputError(f'{name}.ann_file {ann_file!r} not found (cwd: {os.getcwd()}); '
                                     f'{TINY_SAMPLE_HINT} ({name}.ann_file=PATH)')


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_dataset_paths(where: str, dataset: dict) -> None:
    root = dataset.get('data_root') or ''
    if '://' in root:  # remote storage: nothing to check locally
        return
    if root and not osp.isdir(root):
        raise ToolInputError(f'{where}.data_root {root!r} does not exist (cwd: {os.getcwd()}); '
                             f'{TINY_SAMPLE_HINT} ({where}.data_root=PATH)')
    ann_file = dataset.get('ann_file') or ''
    if ann_file:
        path = osp.join(root, ann_file)
        if not osp.isfile(path):
            raise ToolInputError(f'{where}: annotation file {path!r} not found; check ann_file and '
                                 f'data_root, or {TINY_SAMPLE_HINT}')
    for key, prefix in (dataset.get('data_prefix') or {}).items():
        path = osp.join(root, prefix)
        if prefix and not osp.isdir(path):
            raise ToolInputError(f'{where}.data_prefix.{key}: folder {path!r} not found; check '
                                 f'data_root and data_prefix, or {TINY_SAMPLE_HINT}')


def check_model_types(cfg: Config) -> None:
    """Report an unregistered model/backbone type with the names that are available."""
    init_default_scope(cfg.default_scope)
    from mmengine.utils import import_modules_from_strings
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    model = cfg.get('model') or {}
    scope_models = _scope_registry(cfg.default_scope)
    for where, node in (('model', model), ('model.backbone', model.get('backbone'))):
        if not isinstance(node, dict) or not isinstance(node.get('type'), str):
            continue
        if scope_models.get(node['type']) is None:
            ours = ', '.join(_mmvssm_backbones())
            raise ToolInputError(
                f"{where}.type={node['type']!r} is not registered in {cfg.default_scope}'s MODELS. "
                f'mmvssm provides the backbones {ours}; check the spelling, and that the config has '
                f"custom_imports=dict(imports=['mmvssm'], allow_failed_imports=False)")


def _scope_registry(scope: str):
    if scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    return MODELS


def _mmvssm_backbones() -> Iterable[str]:
    from mmvssm.models import backbones
    from mmvssm.models.backbones.base import SSMBackbone
    return sorted(name for name, obj in vars(backbones).items()
                  if isinstance(obj, type) and issubclass(obj, SSMBackbone) and obj is not SSMBackbone)
