"""Writing checkpoints so that a kill at any moment leaves the previous file intact.

mmengine 0.10.7 writes a checkpoint by opening the final path and streaming bytes into it, so a run killed
mid-write leaves a truncated ``iter_N.pth``. Here every local write goes to a temporary file next to the
target, is ``fsync``-ed and renamed into place (:func:`atomic_write`). mmengine reaches it through its own
extension point, a file backend registered with ``mmengine.fileio`` (:class:`AtomicLocalBackend`,
``backend_args=dict(backend='atomic_local')``), which :class:`mmvssm.checkpoint.AtomicCheckpointHook`
selects by default.

Each checkpoint our hook writes also carries a CRC32 per tensor in ``meta`` (:func:`tensor_checksums`),
so a file whose tensor data changed afterwards (flipped bits on disk or in transfer) is refused when it is
loaded (:func:`verify_checksums`), naming the tensors.
"""
import contextlib
import glob
import os
import os.path as osp
import re
import tempfile
import zlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import print_log

ATOMIC_BACKEND = 'atomic_local'
CHECKSUM_KEY = 'mmvssm_tensor_crc32'
_TMP_NAME = re.compile(r'^\..+\.[^.]+\.tmp$')  # atomic_write's mkstemp names


def atomic_write(path: str, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it and rename it to ``path``.

    On any failure (a kill included) the temporary file is removed and ``path`` keeps its old content.
    """
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(path) + '.', suffix='.tmp', dir=directory)
    try:
        # mkstemp creates 0600 files: give the result the mode a plain open() would (umask applies)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_save(obj: Any, path: str, save_fn: Optional[Callable[[Any, Any], None]] = None) -> None:
    """``torch.save`` (or ``save_fn(obj, file)``) ``obj`` to ``path`` through :func:`atomic_write`."""
    save_fn = save_fn or torch.save
    atomic_write(path, lambda f: save_fn(obj, f))


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, writing every file atomically (:func:`atomic_write`).

    Inside :meth:`deferred_removal`, ``remove``/``rmtree`` are collected and carried out only when the
    block completes without an error: :class:`~mmvssm.checkpoint.AtomicCheckpointHook` deletes the
    checkpoint beyond ``max_keep_ckpts`` after the new one and ``last_checkpoint`` are complete (mmengine
    deletes it first).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._deferred: Optional[List[Callable[[], None]]] = None

    def put(self, obj: bytes, filepath: Union[str, 'os.PathLike']) -> None:
        atomic_write(str(filepath), lambda f: f.write(obj))

    def put_text(self, obj: str, filepath: Union[str, 'os.PathLike'], encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)

    def remove(self, filepath: Union[str, 'os.PathLike']) -> None:
        self._run_or_defer(super().remove, filepath)

    def rmtree(self, dir_path: Union[str, 'os.PathLike']) -> None:
        self._run_or_defer(super().rmtree, dir_path)

    def _run_or_defer(self, action: Callable[[Any], None], path: Any) -> None:
        if self._deferred is None:
            action(path)
        else:
            self._deferred.append(lambda: action(path))

    @contextlib.contextmanager
    def deferred_removal(self) -> Iterator[None]:
        """Removals asked for in this block happen at its end, and not at all if it raises."""
        self._deferred = []
        try:
            yield
            pending = self._deferred
        finally:
            self._deferred = None
        for action in pending:
            action()


def remove_stale_temporaries(directory: str) -> List[str]:
    """Delete the temporary files a killed :func:`atomic_write` left in ``directory``; returns them."""
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


def _crc32(tensor: torch.Tensor) -> int:
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return zlib.crc32(data)


def tensor_checksums(state: Dict[str, Any]) -> Dict[str, int]:
    """CRC32 of each tensor's bytes (what ``meta[CHECKSUM_KEY]`` holds in the files our hook writes)."""
    return {k: _crc32(v) for k, v in state.items() if isinstance(v, torch.Tensor)}


def verify_checksums(checkpoint: Any, source: str) -> None:
    """Refuse a checkpoint whose tensors no longer match the checksums stored in its ``meta``.

    Files without stored checksums (not written by our hook) pass unchecked.
    """
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    stored = meta.get(CHECKSUM_KEY) if isinstance(meta, dict) else None
    if not stored or not isinstance(checkpoint.get('state_dict'), dict):
        return
    state = checkpoint['state_dict']
    changed = sorted(k for k, crc in stored.items() if k in state and _crc32(state[k]) != crc)
    lost = sorted(k for k in stored if k not in state)
    if changed or lost:
        from .hooks import CheckpointRefused, name_list
        raise CheckpointRefused(
            f'{source}: the tensor data no longer matches the checksums written with it (damaged on disk '
            f'or in transfer): ' + (f'changed: {name_list(changed)}' if changed else '')
            + ('; ' if changed and lost else '') + (f'removed: {name_list(lost)}' if lost else '')
            + '. Use an intact copy of the checkpoint')
