# EfficientViM-M3 ImageNet-1k classifier, 16,604,174 params, official top-1 77.6 (300 ep) / 77.9 (450 ep), 224x224.
# Recipe and checkpoint loading: see efficient_vim_m1_in1k.py.
_base_ = ['./efficient_vim_m1_in1k.py']
model = dict(backbone=dict(arch='m3'), head=dict(in_channels=(224, 320, 512)))
