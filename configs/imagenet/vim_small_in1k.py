# Vim-Small ImageNet-1k classifier: 25,796,584 params, official top-1 80.5 (81.6 after the stride-8
# fine-tune). Recipe of vim/scripts/pt-vim-s.sh: batch 512 (8 x 64), lr 1e-3, wd 0.05, drop_path 0.05;
# everything else as Vim-Tiny.
_base_ = ['./vim_tiny_in1k.py']
embed_dims = 384
model = dict(
    backbone=dict(arch=dict(embed_dims=embed_dims, depth=24), drop_path_rate=0.05),
    head=dict(in_channels=embed_dims))
train_dataloader = dict(batch_size=64)
optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
auto_scale_lr = dict(base_batch_size=512)
