#!/usr/bin/env bash
# Train on a Slurm cluster, one task per GPU, as mmseg's/mmdet's slurm_train.sh.
#
#   [GPUS=16] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#   tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [tools/train.py options ...]
#
# PARTITION     Slurm partition to submit to.
# JOB_NAME      Slurm job name.
# CONFIG        config file, e.g. configs/upernet_vim_tiny_ade20k.py.
# WORK_DIR      where logs and checkpoints go (default: work_dirs/<config name>).
# GPUS          total number of GPUs (tasks) (default 8); GPUS_PER_NODE per node (default min(GPUS, 8)).
# CPUS_PER_TASK CPU cores per task, for the data loader workers (default 5).
# SRUN_ARGS     extra srun arguments, e.g. "--quotatype=reserved" or "--time=48:00:00".
#
# srun starts one process per task; tools/train.py --launcher slurm reads SLURM_PROCID, SLURM_NTASKS
# and the node list through mmengine, so no torchrun is involved. Resume a job that was stopped with
# the same command plus --resume (continues from the newest checkpoint in the work dir) or --resume CKPT,
# with or without WORK_DIR before it.
#
# Example (2 nodes x 8 GPUs):
#   GPUS=16 tools/slurm_train.sh gpu upernet_vim configs/upernet_vim_tiny_ade20k.py
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n '2,20p' "$0" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
# WORK_DIR is optional: an option in its place (`... CONFIG --resume`) belongs to tools/train.py
if [ $# -ge 4 ] && [[ $4 != -* ]]; then
    WORK_DIR=$4
    EXTRA=("${@:5}")
else
    WORK_DIR=
    EXTRA=("${@:4}")
fi
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-}
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -n "$WORK_DIR" ]; then
    EXTRA=(--work-dir "$WORK_DIR" "${EXTRA[@]}")
fi

# SRUN_ARGS is split on spaces on purpose (several srun options in one variable).
# shellcheck disable=SC2086
PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    python -u "$HERE/train.py" "$CONFIG" --launcher slurm "${EXTRA[@]}"
