"""Crash-safe checkpoint writing and resuming for mmengine runs started by our tools.

mmengine 0.10.7 writes a checkpoint by opening the final path and streaming bytes into it, so a run killed
mid-write leaves a truncated ``iter_N.pth`` that ``--resume`` then fails on. Its ``CheckpointHook`` also
deletes the oldest checkpoint (``max_keep_ckpts``) *before* writing the new one and rewrites the
``last_checkpoint`` pointer in place, so a kill at the wrong moment leaves a pointer to a missing file or
an empty pointer.

:func:`crash_safe_checkpoints` fixes both inside a ``with`` block, without touching anything else:

* local checkpoints are written with :func:`mmvssm.utils.atomic_save` (temporary file, ``fsync``,
  rename): the previous file survives a failure and no partial file remains;
* ``--resume`` without a path uses :func:`find_resumable_checkpoint`, which follows ``last_checkpoint``
  when it names an existing file and otherwise takes the newest ``iter_*.pth``/``epoch_*.pth``.

:func:`allow_mmengine_checkpoints` (run by ``import mmvssm``) is for every other tool in the process,
mmseg's and mmdet's own ``tools/train.py``/``test.py`` and the inferencers included: torch >= 2.6 loads with
``weights_only=True`` by default, and mmengine 0.10.7's loader then refuses the checkpoints mmengine itself
writes (``HistoryBuffer``, numpy scalars and arrays). It makes mmengine's ``CheckpointLoader`` load with the
same allow-list of plain-data classes as our own loader, for the duration of each call only; anything
else (an arbitrary pickle) is still refused.
"""
import contextlib
import functools
import glob
import os.path as osp
import re
from typing import Iterator, Optional

import mmengine.runner
import mmengine.runner.checkpoint
import mmengine.runner.runner
import torch
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.logging import print_log

from mmengine.runner.checkpoint import CheckpointLoader

from mmvssm.utils.checkpoint import _safe_globals, atomic_save, safe_mmengine_checkpoint_loading

_CKPT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


def save_checkpoint_atomic(checkpoint: dict, filename: str, file_client_args: Optional[dict] = None,
                           backend_args: Optional[dict] = None) -> None:
    """Drop-in for :func:`mmengine.runner.save_checkpoint` that writes local files atomically.

    Remote back-ends (``pavi://``, ``s3://`` ...) and the deprecated ``file_client_args`` are handed to
    mmengine unchanged: their stores already publish an object only once it is complete.
    """
    filename = str(filename)
    is_local = (file_client_args is None and '://' not in filename
                and isinstance(get_file_backend(filename, backend_args=backend_args), LocalBackend))
    if is_local:
        atomic_save(checkpoint, filename)
    else:
        _ORIGINAL_SAVE(checkpoint, filename, file_client_args=file_client_args,
                       backend_args=backend_args)


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` should continue from, or None when ``work_dir`` holds none.

    Prefers the file named by mmengine's ``work_dir/last_checkpoint``; if that pointer is missing, empty
    or names a deleted file (a kill between mmengine's delete-old and write-new), falls back to the
    ``iter_N.pth``/``epoch_N.pth`` in ``work_dir`` with the largest N.
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named and osp.isfile(named):
            return named
        print_log(f'{pointer} names {named!r}, which does not exist; resuming from the newest '
                  f'checkpoint in {work_dir} instead', logger='current')
    candidates = []
    for path in glob.glob(osp.join(work_dir, '*.pth')):
        match = _CKPT_NAME.match(osp.basename(path))
        if match:
            candidates.append((int(match.group(1)), path))
    if not candidates:
        print_log(f'no checkpoint to resume from in {work_dir}; training starts from scratch',
                  logger='current')
        return None
    return max(candidates)[1]


_ORIGINAL_SAVE = mmengine.runner.checkpoint.save_checkpoint
# Every module namespace through which mmengine 0.10.7 reaches these functions.
_SITES = (mmengine.runner.checkpoint, mmengine.runner.runner, mmengine.runner)


@contextlib.contextmanager
def crash_safe_checkpoints() -> Iterator[None]:
    """Atomic checkpoint writes, robust resume lookup and safe (weights-only) loading in this block.

    Combines the above with :func:`mmvssm.utils.safe_mmengine_checkpoint_loading`, which makes
    ``--resume``/``load_from`` work on torch >= 2.6 without turning off ``weights_only``.
    """
    patches = [(site, name, value) for site in _SITES
               for name, value in (('save_checkpoint', save_checkpoint_atomic),
                                   ('find_latest_checkpoint', find_resumable_checkpoint))]
    saved = [(site, name, getattr(site, name)) for site, name, _ in patches]
    for site, name, value in patches:
        setattr(site, name, value)
    try:
        with safe_mmengine_checkpoint_loading():
            yield
    finally:
        for site, name, value in saved:
            setattr(site, name, value)


def allow_mmengine_checkpoints() -> None:
    """Make mmengine's ``CheckpointLoader`` read mmengine's own checkpoints on torch >= 2.6, safely.

    Wraps ``CheckpointLoader.load_checkpoint``, the one entry that every mmengine load goes through
    (``Runner.resume``/``load_checkpoint``, ``mmengine.runner.load_checkpoint``, ``PretrainedInit``, the
    inferencers' ``weights=``), whatever the scheme (local, http, s3 ...). Each call runs inside
    ``torch.serialization.safe_globals`` with the allow-list of :mod:`mmvssm.utils.checkpoint`: torch's
    ``weights_only=True`` unpickler additionally accepts those plain-data classes (none can run code)
    during that call, refuses everything else as before, and nothing changes for other ``torch.load``
    calls of the process. A load with ``weights_only=False`` asked explicitly is not affected. Idempotent.
    """
    if not hasattr(torch.serialization, 'safe_globals'):  # torch < 2.5: loads are not weights-only
        return
    current = CheckpointLoader.__dict__['load_checkpoint']
    current = getattr(current, '__func__', current)
    if getattr(current, '_mmvssm_allow_list', False):
        return

    @functools.wraps(current)
    def load_checkpoint(cls, filename, map_location=None, logger='current'):
        with torch.serialization.safe_globals(_safe_globals()):
            return current(cls, filename, map_location=map_location, logger=logger)

    load_checkpoint._mmvssm_allow_list = True
    CheckpointLoader.load_checkpoint = classmethod(load_checkpoint)
