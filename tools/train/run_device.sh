#!/usr/bin/env bash
# Runs on the GPU machine from the repository root: checks models.py against
# the fixtures, generates the data and trains. Arguments after the first two
# are passed to train.py.
#   tools/train/run_device.sh CARRY_DIR N_IMAGES [train.py flags...]
set -euo pipefail
carry=$1; n=$2; shift 2
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__)'
(cd tools/train && python3 check_fixtures.py "$OLDPWD/$carry/fixtures")
t0=$(date +%s)
"$carry/datagen" -out /tmp/kiln-data -n "$n" -size 128 -seed 1
echo "datagen: $n images in $(( $(date +%s) - t0 ))s"
(cd tools/train && python3 train.py --data /tmp/kiln-data --work /tmp/kiln-work --out "${OUT:-/tmp/kiln-out}" "$@")
