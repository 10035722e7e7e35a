#!/usr/bin/env bash
# The GPU checks of onmt_qd in one command on a lent GPU machine (prepare with
# benchmarks/gpu_prepare.sh here first), sized for one 10-minute call:
#   1. the GPU tests (CUDA beam search from checkpoints and .qdz files, cuDNN with fake
#      quantization, bf16 training);
#   2. the recipe's gpu profile end to end, timed (data -> teacher -> students ->
#      compression -> evaluation -> report);
#   3. seconds per training epoch, OpenNMT-py model vs a plain-torch one of the same
#      shape (benchmarks/epoch_time.py);
#   4. translation speed on the GPU, alone, against the batch size
#      (benchmarks/translate_speed.py): the quick profile's 4-bit student carried by
#      gpu_prepare.sh (needs no recipe step), the recipe's teacher and 4-bit student,
#      and where the time of one translation run goes (cProfile, top 40 functions).
#      STEPS="tests speed" fits the GPU tests and the speed goal in one short call;
#   5. on 2 or more GPUs only (STEPS=distributed, after the recipe step): data-parallel
#      scaling of quantized distillation, 1 GPU against all (benchmarks/distributed_speed.py).
# Everything is packed into $OUT/results.tgz after every step (so a run stopped at its
# time limit still returns what it finished), with $OUT/summary.txt beside it
# (default OUT: ./gpu_check_out).
#   [STEPS="tests recipe epoch_time speed"] [JOBS=N] bash benchmarks/gpu_check.sh [PROFILE] [SECONDS]
#   (default: every step, profile gpu, 575 s in all, the profile's jobs; JOBS=1 with
#   STEPS=recipe times the recipe one stage at a time, against the profile's 3)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
RES=$(mktemp -d /tmp/gpu_check.XXXX)
PROFILE=${1:-gpu}
STEPS=${STEPS:-tests recipe epoch_time speed}  # a subset runs only those
DEADLINE=$((SECONDS + ${2:-575}))
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 ONMT_QD_DATA_MIRROR=$PWD/.gpu_data
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nproc; date -u; git log --oneline -1; git status --short | head; } > "$RES/machine.txt" 2>&1

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

pack() {  # written to a temporary name, then renamed: a stop mid-way leaves the last good one
    tar czf "$OUT/.results.$BASHPID" -C "$RES" . && mv "$OUT/.results.$BASHPID" "$OUT/results.tgz"
    cp "$RES/summary.txt" "$OUT/summary.txt" 2>/dev/null; }
step() {  # step NAME LIMIT COMMAND...: run under a time limit, log to $RES/NAME.log
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout -k 5 "$limit" "$@" > "$RES/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc seconds=$((SECONDS - t0)) (limit $limit)" | tee -a "$RES/summary.txt"
    pack
}
want() { [[ " $STEPS " == *" $1 "* ]]; }
left() {  # seconds left before the deadline, keeping $1 for what follows (at least 5)
    local n=$((DEADLINE - SECONDS - $1)); echo $((n > 5 ? n : 5)); }

work=/tmp/recipe_$PROFILE
recipe=(python3 -m onmt_qd.bin.recipe multi30k -profile "$PROFILE" -work_dir "$work"
        -from "$ONMT_QD_DATA_MIRROR/multi30k" ${JOBS:+-jobs "$JOBS"})

# 1. The GPU tests, alone (beside the recipe they crawl: both want every core).
if want tests; then
    step gpu_tests 240 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py \
        tests/test_decoder_state.py::test_gpu_translation_from_checkpoint_and_qdz_matches_cpu
fi

# 2. The recipe end to end, timed.
if want recipe; then
    step "recipe_$PROFILE" "$(left "$( want speed && echo 70 || echo 0 )")" "${recipe[@]}"
    for f in report.md results.json bleu_vs_size.png; do
        [ -f "$work/$f" ] && cp "$work/$f" "$RES/${PROFILE}_$f"
    done
    { for f in "$work"/stages/*.done; do echo "$(basename "$f" .done) $(cat "$f")"; done
    } > "$RES/recipe_stages.txt" 2>&1
    mkdir -p "$RES/configs" "$RES/logs" "$RES/eval"
    cp "$work/configs/"*.yaml "$RES/configs/" 2>/dev/null
    cp "$work/logs/"*.log "$RES/logs/" 2>/dev/null; cp "$work/eval/"*.json "$RES/eval/" 2>/dev/null
    pack
fi

# 3. Training throughput against plain torch, on the recipe's data.
if want epoch_time; then
    [ -f "$work/data_config.yaml" ] || "${recipe[@]}" -stages data > "$RES/recipe_data.log" 2>&1
    step epoch_time 90 python3 benchmarks/epoch_time.py -config "$work/data_config.yaml" -gpu \
        -budget_s 60 -json "$RES/epoch_time.json"
fi

# 4. Translation speed, one model at a time, beam 5, the 1,000 test sentences: per batch
#    size, sentences/s, decoding steps, ms per step, the first (cold) run's seconds and
#    ATen operations per step and per sentence (benchmarks/translate_speed.py).
qdz=$work/models/quantized_distillation_4bit.qdz
test_src=$work/data/test_2016_flickr.de
quick=$ONMT_QD_DATA_MIRROR/quick  # the quick profile's 1x128 student, from gpu_prepare.sh
if want speed && [ -f "$quick/quantized_distillation_4bit.qdz" ]; then
    step translation_speed_quick "$(left 25)" python3 benchmarks/translate_speed.py \
        -model "$quick/quantized_distillation_4bit.qdz" -src "$quick/test_2016_flickr.de" \
        -subword_model "$(ls "$quick"/spm*.model)" -gpu -count_ops -batch_sizes 64,500,2000 \
        -json "$RES/speed_quick_student4bit.json"
fi
if want speed && [ -f "$qdz" ]; then
    step translation_speed "$(left 25)" bash -c "
        python3 benchmarks/translate_speed.py -model $qdz -src $test_src -gpu -count_ops \
            -batch_sizes 64,500,2000 -json $RES/speed_student4bit.json
        python3 benchmarks/translate_speed.py -model $work/models/teacher.pt -src $test_src \
            -gpu -batch_sizes 500,2000 -json $RES/speed_teacher.json"
    # where the time of a beam-search run goes (Python bookkeeping vs waits on the GPU)
    step translation_profile "$(left 0)" bash -c "python3 -m cProfile -o $RES/translate.prof \
        -m onmt_qd.bin.eval -model $qdz -src $test_src \
        -tgt $work/data/test_2016_flickr.en -batch_size 500 -gpu 0 > /dev/null &&
        python3 -c \"import pstats; pstats.Stats('$RES/translate.prof').sort_stats('tottime').print_stats(40)\""
fi
# 5. Data-parallel scaling (issue 23), on a machine with 2 or more GPUs only: one GPU
#    against all of them, batch 64 each, the recipe's 4-bit quantized distillation from
#    its teacher cache. One GPU cannot run it: NCCL takes one process per GPU.
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
qd_config=$work/configs/quantized_distillation_4bit.yaml
if want distributed; then
    if [ "$gpus" -ge 2 ] && [ -f "$qd_config" ]; then
        step distributed "$(left 0)" python3 benchmarks/distributed_speed.py \
            -config "$qd_config" -gpus "$gpus" -batch_size 64 -steps 200 -from_step 50
    else
        echo "distributed skipped: $gpus GPU(s), $qd_config $( [ -f "$qd_config" ] &&
            echo present || echo missing) (needs 2+ GPUs and the recipe step)" |
            tee -a "$RES/summary.txt"
    fi
fi
cat "$RES/summary.txt"
