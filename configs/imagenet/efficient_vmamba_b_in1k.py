# EfficientVMamba-B ImageNet-1k classifier, 33,717,136 params, official top-1 81.8.
# Trained with batch 1024 (16 GPUs x 64), otherwise the T recipe.
_base_ = ['./efficient_vmamba_t_in1k.py']
model = dict(backbone=dict(arch='b'), head=dict(in_channels=768))
train_dataloader = dict(batch_size=64)
