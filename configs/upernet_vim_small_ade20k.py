# UperNet + Vim-Small on ADE20K, 512x512, 60k iterations: the official run as it actually ran (hustvl/Vim
# seg/configs/vim/upernet/upernet_vim_small_24_512_slide_60k.py with the overrides of
# seg/scripts/ft_vim_small_upernet.sh). Field by field with sources: docs/recipes.md. Corrected layer decay:
# upernet_vim_small_ade20k_per-layer-decay.py.
_base_ = ['upernet_vim_tiny_ade20k.py']
embed_dims = 384
model = dict(
    backbone=dict(
        arch=dict(embed_dims=embed_dims, depth=24),
        # script: use_residual_as_feature=True, last_layer_process=add -> the residual stream after layers
        # 5, 11, 17 and the final stream after 23
        feature='residual',
        rope=True,  # config: if_rope=True, if_rope_residual=True (pt_hw_seq_len 14, grid 32x32 at 512)
        rope_residual=True,
        rope_pt_grid=14,
        residual_in_fp32=True),
    decode_head=dict(in_channels=[embed_dims] * 4, channels=embed_dims),
    auxiliary_head=dict(in_channels=embed_dims))
# AdamW lr 1e-4 (script), wd 0.05 (config); layer decay 0.95 (script) as it applied (see the Tiny config).
optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.05),
    paramwise_cfg=dict(num_layers=24, layer_decay_rate=0.95, preset='vim_seg_as_run'))
