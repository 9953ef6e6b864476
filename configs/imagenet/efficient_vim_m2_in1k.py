# EfficientViM-M2 ImageNet-1k classifier, 13,903,842 params, official top-1 75.4 (300 ep) / 75.8 (450 ep), 224x224.
# Recipe and checkpoint loading: see efficient_vim_m1_in1k.py.
_base_ = ['./efficient_vim_m1_in1k.py']
model = dict(backbone=dict(arch='m2'), head=dict(in_channels=(128, 256, 512)))
