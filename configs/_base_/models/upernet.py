# mmseg's UperNet (UPerHead + FCN auxiliary head) on ADE20K (150 classes). Each config sets the backbone
# with `backbone=dict(_delete_=True, type=..., ...)` and the head widths with `in_channels`/`channels`.
_base_ = ['mmseg::_base_/models/upernet_r50.py']
model = dict(
    pretrained=None,  # weights come through the backbone's init_cfg
    backbone=dict(_delete_=True, type='Vim', arch='tiny'),
    decode_head=dict(in_channels=[192, 192, 192, 192], num_classes=150),
    auxiliary_head=dict(in_channels=192, num_classes=150))
