# EfficientVMamba-S ImageNet-1k classifier: dims 64 (as the released checkpoint; the repo's yaml and the
# paper's table say 96, which gives 24.8M params), 11,273,688 params, official top-1 78.7.
_base_ = ['./efficient_vmamba_t_in1k.py']
model = dict(backbone=dict(arch='s'), head=dict(in_channels=512))
