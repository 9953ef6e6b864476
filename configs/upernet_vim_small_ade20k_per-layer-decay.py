# The official Vim-Small UperNet recipe (upernet_vim_small_ade20k.py) with the layer decay the official code
# meant to apply: lr x rate ** (25 - i) for layer i (backbone.layers.{i-1}), rate ** 25 for the embeddings,
# x1 for the pyramid and heads; no weight decay for 1-D tensors, biases, pos_embed and A_log. Not the
# published run: the published numbers come from upernet_vim_small_ade20k.py (see docs/recipes.md).
_base_ = ['upernet_vim_small_ade20k.py']
optim_wrapper = dict(paramwise_cfg=dict(preset='per_layer'))
