# Cascade Mask R-CNN + Vim-Small, ViTDet style, COCO, LSJ 1024, 184,375 iterations x 64 images: the
# official run (hustvl/Vim det/projects/ViTDet/configs/COCO/cascade_mask_rcnn_vimdet_s_100ep.py; same
# recipe as the Tiny file with D = 384, layer decay 0.837). The official file sets if_cls_token=True, which
# in VisionMambaDet only deletes the class token and the first pos_embed entry after loading (the forward
# never inserts one); our loader drops the class entry where the checkpoint has it (docs/recipes.md).
_base_ = ['cascade_mask_rcnn_vim_tiny_vitdet_100ep_coco.py']
embed_dims = 384
model = dict(
    backbone=dict(arch=dict(embed_dims=embed_dims, depth=24)),
    neck=dict(in_channels=embed_dims))
