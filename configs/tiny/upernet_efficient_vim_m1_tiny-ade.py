# UperNet + EfficientViM (M1-like, narrower, one block per stage; strides 16/32/64) on the tiny ADE20K
# sample:
#   python tools/misc/make_tiny_datasets.py
#   python tools/train.py configs/tiny/upernet_efficient_vim_m1_tiny-ade.py
_base_ = ['./_upernet_tiny-ade.py']
dims = [64, 96, 128]
model = dict(
    backbone=dict(
        _delete_=True, type='EfficientViM',
        arch=dict(embed_dims=dims, depths=[1, 1, 1], state_dims=[16, 9, 4]), out_indices=(0, 1, 2)),
    decode_head=dict(in_channels=dims, in_index=[0, 1, 2]),
    auxiliary_head=dict(in_channels=dims[1], in_index=1))
