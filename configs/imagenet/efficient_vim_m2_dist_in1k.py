# EfficientViM-M2 distilled (DeiT hard distillation, RegNetY-160 teacher; EfficientViM_M2_dist.pth),
# official top-1 76.7, 15.32M params. The head adds heads_dist/weights_dist and averages both logits at eval.
# For evaluation of the official checkpoints (convert with efficient_vim2mmvssm.py); training the distilled
# head needs a teacher, which mmpretrain's ImageClassifier lacks, so its loss() raises.
_base_ = ['./efficient_vim_m2_in1k.py']
model = dict(head=dict(distillation=True))
