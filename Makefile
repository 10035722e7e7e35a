# `make demo` and `make test` install first when needed, so both work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Use the workplace's local dataset mirror when there is one; otherwise datasets download.
ONMT_QD_DATA_MIRROR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export ONMT_QD_DATA_MIRROR

.PHONY: install demo lint test clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch
	$(BIN)/pip install -q --no-deps -c constraints.txt OpenNMT-py
	$(BIN)/pip install -q -c constraints.txt ConfigArgParse PyYAML pyonmttok sacrebleu \
	    sentencepiece rapidfuzz pyahocorasick regex numpy spacy fasttext-wheel safetensors \
	    bitarray constriction matplotlib scipy ctranslate2 pytest pytest-xdist ruff mypy
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

demo: install
	$(BIN)/onmt_qd_recipe multi30k -profile quick -work_dir runs/multi30k_quick

# pyflakes' and pycodestyle's rules (ruff.toml) on the whole tree, in a second; then mypy
# (mypy.ini) on the annotated packages: quant, codec, distill, inference
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# two workers, one core each: a worker's torch on two threads would fight the other for a core
test: install lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=20 tests

clean:
	rm -rf $(VENV) runs
