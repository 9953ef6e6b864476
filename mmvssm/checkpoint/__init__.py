"""Weights in and out of mmvssm models, through torch's and mmengine's own extension points.

The one route a checkpoint takes (``docs/checkpoints.md``)::

    tool (ours, mmseg's/mmdet's)  ->  Runner (SafeCheckpointRunner: load_from, resume, load_policy)
      ->  read the file: CheckpointLoader scheme -> load_checkpoint_file (weights-only + allow-list)
      ->  model.load_state_dict: the pre-hook converts official layouts, the post-hook reports and refuses

Importing this package registers, without replacing any function of torch or mmengine:

* the plain-data allow-list with ``torch.serialization.add_safe_globals`` (process-wide; :mod:`.read`),
* loaders for mmengine's local and URL schemes with ``CheckpointLoader.register_scheme`` (:mod:`.schemes`),
* the ``atomic_local`` file backend with ``mmengine.fileio.register_backend`` (:mod:`.save`),
* ``AtomicCheckpointHook`` and ``SafeCheckpointRunner`` in mmengine's root ``HOOKS``/``RUNNERS``
  (:mod:`.runner`),
* a torch module-registration hook that gives the ancestors of a module with an official layout the
  conversion/check hooks (:mod:`.hooks`).

This package knows no model: what each model's files look like lives beside the model
(``convert_checkpoint``, ``convert_classifier_checkpoint``, ``fresh_key_prefixes``).
"""
from .hooks import (DEFAULT_MIN_RESTORED, CheckpointRefused, LoadPolicy, WeightsMismatchError,
                    attach_weight_hooks, convert_state_dict, last_load_report, load_policy, load_pretrained,
                    load_weights, set_load_policy)
from .read import (ENV_ALLOW_UNSAFE, UnsafeCheckpointError, env_trusts, extract_state_dict, load_checkpoint_file,
                   register_safe_globals, safe_load_globals, strip_prefix)
from .runner import AtomicCheckpointHook, SafeCheckpointRunner, find_resumable_checkpoint
from .save import (ATOMIC_BACKEND, CHECKSUM_KEY, AtomicLocalBackend, atomic_save, atomic_write,
                   remove_stale_temporaries, tensor_checksums, verify_checksums)
from .schemes import register_safe_schemes

register_safe_globals()
register_safe_schemes()

__all__ = [
    'DEFAULT_MIN_RESTORED', 'CheckpointRefused', 'LoadPolicy', 'WeightsMismatchError', 'attach_weight_hooks',
    'convert_state_dict', 'last_load_report', 'load_policy', 'load_pretrained', 'load_weights',
    'set_load_policy', 'ENV_ALLOW_UNSAFE', 'UnsafeCheckpointError', 'env_trusts', 'extract_state_dict', 'load_checkpoint_file',
    'register_safe_globals', 'safe_load_globals', 'strip_prefix', 'AtomicCheckpointHook',
    'SafeCheckpointRunner', 'find_resumable_checkpoint', 'ATOMIC_BACKEND', 'CHECKSUM_KEY',
    'AtomicLocalBackend', 'atomic_save', 'atomic_write', 'remove_stale_temporaries', 'tensor_checksums',
    'verify_checksums', 'register_safe_schemes'
]
