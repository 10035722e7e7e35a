from setuptools import find_packages, setup

setup(
    name="onmt_qd",
    version="0.1.0",
    description="Quantized distillation and differentiable quantization for OpenNMT-py",
    packages=find_packages(include=["onmt_qd", "onmt_qd.*"]),
    py_modules=["onmt_qd_cli"],  # the console commands, run before onmt_qd is imported
    python_requires=">=3.10",
    # OpenNMT-py 3.5.1 is installed with --no-deps (it pins torch<2.3 but runs on
    # current torch); these are the packages it and we really import.
    install_requires=[
        "torch>=2.6",
        "OpenNMT-py==3.5.1",
        "ConfigArgParse",
        "PyYAML",
        "pyonmttok",
        "sacrebleu>=2",
        "sentencepiece",
        "rapidfuzz",
        "pyahocorasick",
        "regex",
        "numpy",
        "spacy",
        "fasttext-wheel",
        "safetensors",
        "bitarray>=2.9",
        "constriction",
        "matplotlib",
        "ctranslate2",
    ],
    entry_points={
        "console_scripts": [
            "onmt_qd_train=onmt_qd_cli:train",
            "onmt_qd_quantize=onmt_qd_cli:quantize",
            "onmt_qd_diffquant=onmt_qd_cli:diffquant",
            "onmt_qd_compress=onmt_qd_cli:compress",
            "onmt_qd_translate=onmt_qd_cli:translate",
            "onmt_qd_eval=onmt_qd_cli:eval",
            "onmt_qd_recipe=onmt_qd_cli:recipe",
            "onmt_qd_data=onmt_qd_cli:data",
            "onmt_qd_teacher_cache=onmt_qd_cli:teacher_cache",
            "onmt_qd_export=onmt_qd_cli:export",
            "onmt_qd_teacher_translate=onmt_qd_cli:teacher_translate",
        ]
    },
)
