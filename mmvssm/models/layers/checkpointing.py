"""The one ``with_cp`` rule of every mmvssm backbone: activation checkpointing per block."""
from typing import Any

import torch.utils.checkpoint as cp
from torch import is_grad_enabled, nn


def run_block(block: nn.Module, *inputs: Any, with_cp: bool) -> Any:
    """``block(*inputs)``, recomputed in the backward pass instead of storing its activations when
    ``with_cp`` is set and autograd is recording.

    The rule looks at autograd, not at ``inputs[0].requires_grad``: behind a frozen stem the input needs
    no gradient but the block's own parameters do, and they must still be checkpointed. Under
    ``torch.no_grad()`` (inference) nothing would be stored, so the block is called plainly.
    """
    if with_cp and is_grad_enabled():
        return cp.checkpoint(block, *inputs, use_reentrant=False)
    return block(*inputs)
