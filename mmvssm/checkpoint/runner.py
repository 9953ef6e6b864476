"""The Runner and CheckpointHook our configs name: crash-safe saving, robust resume, the load policy.

Both are registered in mmengine's root registries, so mmseg's and mmdet's own tools build them from
``runner_type`` and ``default_hooks`` (the plug-in configs show the two lines)::

    runner_type = 'SafeCheckpointRunner'
    default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

* :class:`AtomicCheckpointHook` is mmengine's ``CheckpointHook`` writing through the atomic local backend
  (:mod:`mmvssm.checkpoint.save`) and deleting the checkpoint beyond ``max_keep_ckpts`` only after the new
  one and ``last_checkpoint`` are complete; it stores a checksum per tensor in each file's ``meta``.
* :class:`SafeCheckpointRunner` resumes (``resume=True`` without ``load_from``) from the newest checkpoint
  that reads back (:func:`find_resumable_checkpoint`), refuses a checkpoint whose tensors no longer match
  their checksums, and loads every checkpoint under the config's ``load_policy`` (the fields of
  :class:`~mmvssm.checkpoint.LoadPolicy`), with the file named in the report.
"""
import glob
import logging
import os.path as osp
import re
from typing import Any, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS, RUNNERS
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model

from .hooks import attach_weight_hooks, load_policy, set_load_policy
from .read import load_checkpoint_file
from .save import (ATOMIC_BACKEND, CHECKSUM_KEY, AtomicLocalBackend, atomic_write,
                   remove_stale_temporaries, tensor_checksums, verify_checksums)

_CKPT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same arguments) whose saves a kill cannot corrupt.

    Without ``backend_args`` the files are written by the ``atomic_local`` backend (temporary file,
    fsync, rename); the outdated checkpoint (``max_keep_ckpts``) is deleted only after the new one and the
    ``last_checkpoint`` pointer are complete. Each file's ``meta`` holds a CRC32 per tensor.
    """

    def __init__(self, *args: Any, backend_args: Optional[dict] = None, **kwargs: Any) -> None:
        if backend_args is None and kwargs.get('file_client_args') is None:
            backend_args = dict(backend=ATOMIC_BACKEND)
        super().__init__(*args, backend_args=backend_args, **kwargs)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})[CHECKSUM_KEY] = tensor_checksums(checkpoint.get('state_dict', {}))

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not isinstance(self.file_backend, AtomicLocalBackend):  # a remote store publishes whole objects
            super()._save_checkpoint_with_step(runner, step, meta)
            return
        with self.file_backend.deferred_removal():
            super()._save_checkpoint_with_step(runner, step, meta)
            if is_main_process():  # mmengine rewrote the pointer in place: make it whole again
                atomic_write(osp.join(runner.work_dir, 'last_checkpoint'),
                             lambda f: f.write(str(self.last_ckpt).encode()))


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
    """The checkpoint a resume should continue from, or None when ``work_dir`` holds none.

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


@RUNNERS.register_module()
class SafeCheckpointRunner(Runner):
    """mmengine's ``Runner`` with robust resume, checksum checks and an explicit load policy.

    Args:
        load_policy: fields of :class:`~mmvssm.checkpoint.LoadPolicy` for every checkpoint this runner
            loads into its model (``load_from``, resume, ``load_checkpoint``), e.g.
            ``dict(min_restored=1.0, allow_mismatch=False)``; from the config's top-level
            ``load_policy`` when built by ``from_cfg``. Default: the policy's defaults (90 % restored,
            tensors of other shapes skipped for fine-tuning).
        *args, **kwargs: as for ``Runner``.
    """

    def __init__(self, *args: Any, load_policy: Optional[dict] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if load_policy is None:
            load_policy = self.cfg.get('load_policy') or {}
        set_load_policy(attach_weight_hooks(self._bare_model()), **dict(load_policy))

    def _bare_model(self):
        return self.model.module if is_model_wrapper(self.model) else self.model

    def load_or_resume(self) -> None:
        if self._has_loaded or not (self._resume and self._load_from is None):
            return super().load_or_resume()
        # automatic resume: the newest checkpoint that reads back, not just the newest name
        resume_from = find_resumable_checkpoint(self.work_dir)
        if resume_from is not None:
            self.logger.info(f'Auto resumed from the latest readable checkpoint {resume_from}.')
            self.resume(resume_from)
            self._has_loaded = True

    def load_checkpoint(self, filename: str, map_location: Any = 'cpu', strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]):  # noqa: B006 (mmengine's default)
        """mmengine's ``Runner.load_checkpoint`` with the checksum check, and ``filename`` in the report."""
        checkpoint = _load_checkpoint(filename, map_location=map_location)
        verify_checksums(checkpoint, filename)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self._bare_model()
        with load_policy(model, source=filename):
            checkpoint = _load_checkpoint_to_model(model, checkpoint, strict, revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint
