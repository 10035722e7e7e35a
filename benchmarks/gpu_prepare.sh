#!/usr/bin/env bash
# Run HERE (a connected CPU machine) before benchmarks/gpu_check.sh goes to a lent GPU
# machine, which has torch, sacrebleu, sentencepiece, PyYAML, numpy, scipy, matplotlib,
# safetensors, regex and pytest but nothing else we import and no network.
# It fills two git-ignored folders that the device call must carry:
#   .whl/      cp312 manylinux wheels of OpenNMT-py and the rest of our imports
#   .gpu_data/ the Multi30K files (from $ONMT_QD_DATA_MIRROR or ../shared/data)
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
du -sh .whl .gpu_data
