"""Crash-safe checkpoint writing and resuming for mmengine runs started by our tools.

mmengine 0.10.7 writes a checkpoint by opening the final path and streaming bytes into it, so a run killed
mid-write leaves a truncated ``iter_N.pth`` that ``--resume`` then fails on. Its ``CheckpointHook`` also
deletes the oldest checkpoint (``max_keep_ckpts``) *before* writing the new one and rewrites the
``last_checkpoint`` pointer in place, so a kill at the wrong moment leaves a pointer to a missing file or
an empty pointer.

:func:`crash_safe_checkpoints` fixes both inside a ``with`` block, without touching anything else:

* local checkpoints are written with :func:`mmvssm.utils.atomic_save` (temporary file, ``fsync``,
  rename): the previous file survives a failure and no partial file remains;
* the checkpoint beyond ``max_keep_ckpts`` is deleted after the new one is written, not before;
* ``--resume`` without a path uses :func:`find_resumable_checkpoint`, which follows ``last_checkpoint``
  when it names an existing file and otherwise takes the newest ``iter_*.pth``/``epoch_*.pth``, refuses
  (with an error in the log) one that cannot be read and falls back to the previous one, and deletes the
  temporary files of an interrupted save.

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
import logging
import os
import os.path as osp
import re
from typing import Iterator, List, Optional, Tuple

import mmengine.runner
import mmengine.runner.checkpoint
import mmengine.runner.runner
import torch
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.logging import print_log

from mmengine.hooks import CheckpointHook
from mmengine.runner.checkpoint import CheckpointLoader

from mmvssm.utils.checkpoint import (atomic_save, load_checkpoint_file, safe_load_globals,
                                     safe_mmengine_checkpoint_loading)

_CKPT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')
_TMP_NAME = re.compile(r'^\..+\.pth\.[^.]+\.tmp$')  # atomic_save's mkstemp names


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


def remove_stale_temporaries(directory: str) -> List[str]:
    """Delete the temporary files a killed :func:`atomic_save` left in ``directory``; returns them."""
    removed = []
    for path in glob.glob(osp.join(directory, '.*.tmp')):
        if _TMP_NAME.match(osp.basename(path)):
            with contextlib.suppress(OSError):
                os.remove(path)
                removed.append(path)
    if removed:
        print_log(f'removed {len(removed)} unfinished checkpoint file(s) of an interrupted save: '
                  f'{", ".join(map(osp.basename, removed))}', logger='current')
    return removed


def _readable(path: str) -> bool:
    try:
        load_checkpoint_file(path)
    except (RuntimeError, OSError) as err:
        print_log(f'refusing to resume from {path}: {err}. Falling back to the previous checkpoint; '
                  f'move the file away if it is still being written, or delete it',
                  logger='current', level=logging.ERROR)
        return False
    return True


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` should continue from, or None when ``work_dir`` holds none.

    Candidates, newest first: the file named by mmengine's ``work_dir/last_checkpoint``, then the
    ``iter_N.pth``/``epoch_N.pth`` files by decreasing N. A pointer that is empty or names a deleted file
    is skipped; a candidate that cannot be read (corrupt, truncated) is refused with an error in the log
    and the previous one is taken. Temporary files of an interrupted save are deleted first.
    """
    remove_stale_temporaries(work_dir)
    candidates = []
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named and osp.isfile(named):
            candidates.append(named)
        else:
            print_log(f'{pointer} names {named!r}, which does not exist; resuming from the newest '
                      f'checkpoint in {work_dir} instead', logger='current')
    numbered = []
    for path in glob.glob(osp.join(work_dir, '*.pth')):
        match = _CKPT_NAME.match(osp.basename(path))
        if match:
            numbered.append((int(match.group(1)), path))
    candidates += [path for _, path in sorted(numbered, reverse=True)
                   if not any(osp.samefile(path, c) for c in candidates)]
    for path in candidates:
        if _readable(path):
            return path
    if candidates:
        raise RuntimeError(f'--resume: none of the checkpoints in {work_dir} can be read '
                           f'({", ".join(map(osp.basename, candidates))}); resume from a good copy '
                           f'with --resume PATH, or train from scratch without --resume')
    print_log(f'no checkpoint to resume from in {work_dir}; training starts from scratch',
              logger='current', level=logging.WARNING)
    return None


def _save_checkpoint_with_step_then_prune(self, runner, step, meta):
    """mmengine's ``CheckpointHook._save_checkpoint_with_step``, deleting the outdated checkpoint (the
    ``max_keep_ckpts`` limit) only after the new one and the ``last_checkpoint`` pointer are written, so a
    kill during the save leaves the previous checkpoint (mmengine deletes it first)."""
    backend = self.file_backend
    doomed: List[Tuple[str, str]] = []
    backend.remove = lambda path: doomed.append(('remove', path))
    backend.rmtree = lambda path: doomed.append(('rmtree', path))
    try:
        _ORIGINAL_SAVE_WITH_STEP(self, runner, step, meta)
    finally:
        del backend.remove, backend.rmtree  # the class's methods again
    for how, path in doomed:
        getattr(backend, how)(path)


_ORIGINAL_SAVE = mmengine.runner.checkpoint.save_checkpoint
_ORIGINAL_SAVE_WITH_STEP = CheckpointHook._save_checkpoint_with_step
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
    patches.append((CheckpointHook, '_save_checkpoint_with_step', _save_checkpoint_with_step_then_prune))
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
        with torch.serialization.safe_globals(safe_load_globals()):
            return current(cls, filename, map_location=map_location, logger=logger)

    load_checkpoint._mmvssm_allow_list = True
    CheckpointLoader.load_checkpoint = classmethod(load_checkpoint)
