# UperNet + EfficientVMamba-T widths at one block per stage on the tiny ADE20K sample:
#   python tools/misc/make_tiny_datasets.py
#   python tools/train.py configs/tiny/upernet_efficient_vmamba_t_tiny-ade.py
_base_ = ['./_upernet_tiny-ade.py']
dims = [48, 96, 192, 384]
model = dict(
    backbone=dict(
        _delete_=True, type='EfficientVMamba', arch=dict(dims=dims, depths=[1, 1, 1, 1]),
        out_indices=(0, 1, 2, 3)),
    decode_head=dict(in_channels=dims),
    auxiliary_head=dict(in_channels=dims[2]))
