"""Register the modules that need an OpenMMLab toolbox only when that toolbox imports.

``import mmvssm`` and the backbones need torch and mmengine alone (a bare GPU machine has no mmcv, and a
broken mmpretrain must not take the backbones down with it). The classification heads subclass mmpretrain's
``ClsHead`` and the EfficientViM FPN uses mmcv's ``ConvModule``; their subpackages ask :func:`toolbox_imports`
first and import those modules, which register themselves as before, only when it says yes.

When the toolbox is missing, or installed but failing to import (mmpretrain 1.2.0 next to transformers
>= 4.50), the names are registered as placeholders that raise an ImportError with the reason and the fix
when a config builds them, and importing them from their subpackage raises the same error. A toolbox that
is installed but broken is also reported once, as a warning, when mmvssm is imported.
"""
import importlib
import warnings
from typing import Any, Callable, Dict, NoReturn, Sequence

from mmengine.registry import MODELS

# why each toolbox is unavailable, by import name; read by placeholders and module __getattr__s
_unavailable: Dict[str, str] = {}


def toolbox_imports(module: str, provides: Sequence[str], fix: str) -> bool:
    """Whether ``module`` (e.g. ``'mmpretrain.models.heads'``) imports.

    If not, each name in ``provides`` is registered in the root ``MODELS`` as a placeholder that raises an
    ImportError naming the reason and ``fix`` when built. A missing toolbox is expected (the backbones do
    not need it); a toolbox that is installed but does not import is also reported as a warning.
    """
    toolbox = module.split('.')[0]
    try:
        importlib.import_module(module)
        return True
    except ModuleNotFoundError as err:
        if (err.name or '').split('.')[0] != toolbox:  # the toolbox is there, one of its imports is not
            reason = _broken(toolbox, err)
        else:
            reason = f'{toolbox} is not installed'
    except Exception as err:  # broken installs raise ImportError, AttributeError, RuntimeError, ...
        reason = _broken(toolbox, err)
    message = f'{reason}; {fix}'
    for name in provides:
        _unavailable[name] = message
        MODELS.register_module(name=name, module=_placeholder(name, message), force=True)
    return False


def missing_attribute(package: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that explains why a toolbox-backed name is absent."""

    def __getattr__(name: str) -> NoReturn:
        if name in _unavailable:
            raise ImportError(f'{package}.{name} is unavailable: {_unavailable[name]}')
        raise AttributeError(f'module {package!r} has no attribute {name!r}')

    return __getattr__


def _broken(toolbox: str, err: BaseException) -> str:
    reason = f'{toolbox} is installed but fails to import ({type(err).__name__}: {err})'
    warnings.warn(f'mmvssm: {reason}; the backbones work, the modules that need {toolbox} do not. '
                  f'Fix or uninstall {toolbox} (see README.md, Troubleshooting)', stacklevel=3)
    return reason


def _placeholder(name: str, message: str) -> Callable[..., NoReturn]:
    def build(*args: Any, **kwargs: Any) -> NoReturn:
        raise ImportError(f'{name} is unavailable: {message}')

    build.__name__ = build.__qualname__ = name
    return build
