#!/usr/bin/env bash
# The README's main command: generate the tiny ADE20K-format sample, train UperNet + Vim-Tiny (reduced
# depth, configs/tiny/upernet_vim_tiny_tiny-ade.py) on it for 250 iterations on the CPU, then evaluate
# the final checkpoint with tools/test.py (mmseg IoUMetric: per-class IoU/Acc table, aAcc, mIoU, mAcc).
#
#   tools/run_demo.sh [WORK_DIR] [tools/train.py --cfg-options ...]
#
# WORK_DIR defaults to work_dirs/demo. Progress and ETA are logged by mmengine every 20 iterations.
# About 10 minutes on 2 CPU cores.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
WORK_DIR=${1:-work_dirs/demo}
CONFIG="$REPO/configs/tiny/upernet_vim_tiny_tiny-ade.py"
EXTRA=()
if [ $# -gt 1 ]; then
    EXTRA=(--cfg-options "${@:2}")
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

python "$HERE/misc/make_tiny_datasets.py" --out data/tiny
python "$HERE/train.py" "$CONFIG" --work-dir "$WORK_DIR" "${EXTRA[@]}"
CKPT=$(cat "$WORK_DIR/last_checkpoint")
python "$HERE/test.py" "$CONFIG" "$CKPT" --work-dir "$WORK_DIR" "${EXTRA[@]}" 2>&1 \
    | tee "$WORK_DIR/test.log" | grep -E "aAcc|Iter\(test\)|^\|  *(wall|floor|tree|person|car|painting) "
