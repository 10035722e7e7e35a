#!/usr/bin/env bash
# Run HERE (a connected CPU machine) before benchmarks/gpu_check.sh goes to a lent GPU
# machine, which has torch, sacrebleu, sentencepiece, PyYAML, numpy, scipy, matplotlib,
# safetensors, regex and pytest but nothing else we import and no network.
# It fills two git-ignored folders that the device call must carry:
#   .whl/      cp312 manylinux wheels of OpenNMT-py and the rest of our imports
#   .gpu_data/ the Multi30K files (from $ONMT_QD_DATA_MIRROR or ../shared/data), and
#              the quick profile's 4-bit student .qdz when make demo has made one
# then:  run(command="bash benchmarks/gpu_check.sh", carry=[".whl", ".gpu_data"])
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl .gpu_data
platforms=()
for n in 2_28 2_27 2_24 2_17 2014 1; do
    case $n in 2014) platforms+=(--platform manylinux2014_x86_64);;
               1) platforms+=(--platform manylinux1_x86_64);;
               *) platforms+=(--platform "manylinux_${n}_x86_64");; esac
done
# The versions of constraints.txt; spacy and fasttext are left out: OpenNMT-py imports
# them at start-up only (terminology and LM-prior transforms we never use), and
# gpu_check.sh gives it empty stand-ins for that import on the device alone.
for pkg in OpenNMT-py ConfigArgParse pyonmttok rapidfuzz pyahocorasick bitarray constriction; do
    spec=$(grep -i "^${pkg}==" constraints.txt)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]}" -d .whl "$spec"
done
mirror=${ONMT_QD_DATA_MIRROR:-../shared/data}
cp -r "$mirror/multi30k" .gpu_data/
# The quick profile's 4-bit student (make demo), when there is one: gpu_check.sh's
# translation-speed step measures it even when the recipe step does not run.
quick=runs/multi30k_quick
if [ -f "$quick/models/quantized_distillation_4bit.qdz" ]; then
    mkdir -p .gpu_data/quick
    cp "$quick/models/quantized_distillation_4bit.qdz" "$quick"/data/spm*.model \
        "$quick/data/test_2016_flickr.de" .gpu_data/quick/
fi
du -sh .whl .gpu_data
