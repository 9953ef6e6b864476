#!/usr/bin/env bash
# torchrun launcher shared by dist_train.sh and dist_test.sh (not meant to be called directly):
#
#   tools/dist_launch.sh SCRIPT NUM_PROCS [SCRIPT arguments ...]
#
# One process per GPU. Without CUDA the processes run on CPU and the tools switch to the gloo backend
# (and SyncBN to BN). With fewer GPUs than NUM_PROCS (NCCL needs one GPU per process) the GPUs are hidden
# and the processes run on the CPU the same way, said on the terminal.
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, PORT.
set -euo pipefail
SCRIPT=$1
NPROCS=$2
HERE=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}"

# mmengine picks its device when imported, so the GPUs can only be hidden here, before the processes start.
SHORTAGE=$(python - "$NPROCS" <<'PY'
import sys
from mmvssm.engine.launch import gpu_shortage
print(gpu_shortage(int(sys.argv[1])) or '')
PY
)
if [ -n "$SHORTAGE" ]; then
    echo "[dist_launch] $SHORTAGE: running the processes on the CPU with gloo instead" >&2
    export CUDA_VISIBLE_DEVICES=
    export MMVSSM_DIST_NOTE="GPUs hidden by tools/dist_launch.sh: $SHORTAGE"
fi

exec python -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$NPROCS" --master_port="${PORT:-29500}" \
    "$HERE/$SCRIPT" --launcher pytorch "${@:3}"
