# UperNet + Vim-Tiny width (D=192) at reduced depth (6 layers) on the tiny ADE20K sample:
#   python tools/misc/make_tiny_datasets.py && python tools/train.py configs/tiny/upernet_vim_tiny_tiny-ade.py
_base_ = ['./_upernet_tiny-ade.py']
embed_dims = 192
model = dict(
    backbone=dict(
        _delete_=True,
        type='Vim',
        arch=dict(embed_dims=embed_dims, depth=6),
        img_size=96,
        patch_size=16,
        out_indices=(1, 2, 4, 5)),
    decode_head=dict(in_channels=[embed_dims] * 4),
    auxiliary_head=dict(in_channels=embed_dims))
