#!/usr/bin/env bash
# The GPU checks of onmt_qd in one command on a lent GPU machine (prepare with
# benchmarks/gpu_prepare.sh here first). Writes everything under $OUT (default
# ./gpu_check_out): the GPU tests' log, CUDA translation and evaluation of a model and
# its .qdz, step times on the GPU, and the recipe's wall time and report.
#   bash benchmarks/gpu_check.sh [PROFILE]     (PROFILE: recipe profile, default paper)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
PROFILE=${1:-paper}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 ONMT_QD_DATA_MIRROR=$PWD/.gpu_data
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  date -u; git log --oneline -1; } > "$OUT/machine.txt" 2>&1

if ! python3 -c "import onmt" 2>/dev/null; then
    site=/tmp/site
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" .whl/*.whl || exit 1
    # OpenNMT-py imports spacy and fasttext when it starts (two transforms we never
    # use); on this machine only, empty modules stand in for that import.
    for stub in spacy fasttext; do
        python3 -c "import $stub" 2>/dev/null || : > "$site/$stub.py"
    done
    export PYTHONPATH=$site:$PWD
else
    export PYTHONPATH=$PWD
fi

step() {  # step NAME COMMAND...: run, log to $OUT/NAME.log, record the seconds
    local name=$1; shift
    local t0=$SECONDS
    "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc seconds=$((SECONDS - t0))" | tee -a "$OUT/summary.txt"
}

# 1. GPU tests: cuDNN with fake quantization, GPU vs CPU quantizer, CUDA beam search
#    of 2-layer decoders from a checkpoint and a .qdz (brnn/rnn, input feeding on/off).
step gpu_tests python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py \
    tests/test_decoder_state.py tests/test_quant.py

# 2. The recipe end to end on the GPU, timed (data -> teacher -> students ->
#    compression -> evaluation -> report).
work=/tmp/recipe_$PROFILE
step "recipe_$PROFILE" python3 -m onmt_qd.bin.recipe multi30k -profile "$PROFILE" \
    -work_dir "$work" -from "$ONMT_QD_DATA_MIRROR/multi30k" -gpu
for f in report.md results.json bleu_vs_size.png; do
    [ -f "$work/$f" ] && cp "$work/$f" "$OUT/${PROFILE}_$f"
done
tail -n 30 "$work"/logs/*.log > "$OUT/recipe_logs_tail.txt" 2>/dev/null

# 3. Step times on the GPU against plain training, on the recipe's own data and teacher.
if [ -f "$work/data_config.yaml" ] && [ -f "$work/models/teacher.pt" ]; then
    step step_time python3 benchmarks/step_time.py -config "$work/data_config.yaml" \
        -teacher "$work/models/teacher.pt" -gpu
fi
cat "$OUT/summary.txt"
