# EfficientViM-M1 distilled (DeiT hard distillation, RegNetY-160 teacher; EfficientViM_M1_dist.pth),
# official top-1 74.6, 7.64M params. The head adds heads_dist/weights_dist and averages both logits at eval.
# For evaluation of the official checkpoints (convert with efficient_vim2mmvssm.py); training the distilled
# head needs a teacher, which mmpretrain's ImageClassifier lacks, so its loss() raises.
_base_ = ['./efficient_vim_m1_in1k.py']
model = dict(head=dict(distillation=True))
