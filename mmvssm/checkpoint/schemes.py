"""Every scheme of mmengine's ``CheckpointLoader`` reads through :func:`~mmvssm.checkpoint.load_checkpoint_file`.

mmengine's http(s) loader (and so ``torchvision://``, ``modelzoo://``, ``open-mmlab://``, ``mmcls://``,
which resolve to URLs) goes through ``torch.hub.load_state_dict_from_url``, whose default is
``weights_only=False``: a pickle given as a URL would run code. The loaders here are registered for the
same prefixes with mmengine's own ``CheckpointLoader.register_scheme(..., force=True)``: a URL is
downloaded into torch's hub cache (as before, ``<hub dir>/checkpoints/<file name>``) and that file is read
like a local one, weights-only with the allow-list; ``MMVSSM_ALLOW_UNSAFE_LOAD`` names the cached file.
``pavi://`` and ``s3://`` keep mmengine's loaders, which read bytes with ``torch.load``'s default
(weights-only on torch >= 2.6, with the registered allow-list).
"""
import logging
import os
import os.path as osp
from typing import Any
from urllib.parse import urlparse

import torch
from mmengine.dist import get_dist_info
from mmengine.logging import print_log
from mmengine.runner.checkpoint import (CheckpointLoader, _get_mmengine_home, _process_mmcls_checkpoint,
                                        get_deprecated_model_names, get_external_models, get_mmcls_models,
                                        get_torchvision_models)

from .read import load_checkpoint_file


def load_from_local(filename: str, map_location: Any = None) -> Any:
    return load_checkpoint_file(osp.expanduser(filename), map_location=map_location)


def cached_download(url: str) -> str:
    """The file of ``url`` in torch's hub cache, downloaded first if absent (rank 0 first when
    distributed, as mmengine does)."""
    directory = osp.join(torch.hub.get_dir(), 'checkpoints')
    path = osp.join(directory, osp.basename(urlparse(url).path))
    rank, world_size = get_dist_info()
    if rank == 0:
        _download(url, path)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            _download(url, path)
    return path


def _download(url: str, path: str) -> None:
    if not osp.isfile(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
        print_log(f'downloading {url} to {path}', logger='current')
        torch.hub.download_url_to_file(url, path, progress=False)


def load_from_http(filename: str, map_location: Any = None) -> Any:
    return load_checkpoint_file(cached_download(filename), map_location=map_location)


def load_from_torchvision(filename: str, map_location: Any = None) -> Any:
    if filename.startswith('modelzoo://'):
        print_log('The URL scheme of "modelzoo://" is deprecated, please use "torchvision://" instead',
                  logger='current', level=logging.WARNING)
    name = filename.split('://', 1)[1]
    return load_from_http(get_torchvision_models()[name], map_location)


def load_from_openmmlab(filename: str, map_location: Any = None) -> Any:
    scheme, name = filename.split('://', 1)
    name = get_deprecated_model_names().get(name, name)
    url = get_external_models()[name]
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location)
    path = osp.join(_get_mmengine_home(), url)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{scheme}://{name}: {path} can not be found.')
    return load_checkpoint_file(path, map_location=map_location)


def load_from_mmcls(filename: str, map_location: Any = None) -> Any:
    name = filename.split('://', 1)[1]
    return _process_mmcls_checkpoint(load_from_http(get_mmcls_models()[name], map_location))


SCHEMES = {'': load_from_local, 'http://': load_from_http, 'https://': load_from_http,
           'torchvision://': load_from_torchvision, 'modelzoo://': load_from_torchvision,
           'open-mmlab://': load_from_openmmlab, 'openmmlab://': load_from_openmmlab,
           'mmcls://': load_from_mmcls}


def register_safe_schemes() -> None:
    """Register the loaders above with mmengine's ``CheckpointLoader`` (idempotent)."""
    for prefix, loader in SCHEMES.items():
        if CheckpointLoader._get_checkpoint_loader(prefix + 'x') is not loader:
            CheckpointLoader.register_scheme(prefix, loader, force=True)
