# UperNet + Vim-Small on ADE20K, 512x512, 60k iterations; identical recipe to Vim-Tiny but D = 384.
_base_ = ['upernet_vim_tiny_ade20k.py']
embed_dims = 384
model = dict(
    backbone=dict(arch=dict(embed_dims=embed_dims, depth=24)),
    decode_head=dict(in_channels=[embed_dims] * 4, channels=embed_dims),
    auxiliary_head=dict(in_channels=embed_dims))
