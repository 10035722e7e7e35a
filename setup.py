from setuptools import find_packages, setup

setup(
    name="onmt_qd",
    version="0.1.0",
    description="Quantized distillation and differentiable quantization for OpenNMT-py",
    packages=find_packages(include=["onmt_qd", "onmt_qd.*"]),
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
            "onmt_qd_train=onmt_qd.bin.train:main",
            "onmt_qd_quantize=onmt_qd.bin.quantize:main",
            "onmt_qd_diffquant=onmt_qd.bin.diffquant:main",
            "onmt_qd_compress=onmt_qd.bin.compress:main",
            "onmt_qd_translate=onmt_qd.bin.translate:main",
            "onmt_qd_eval=onmt_qd.bin.eval:main",
            "onmt_qd_recipe=onmt_qd.bin.recipe:main",
            "onmt_qd_data=onmt_qd.bin.data:main",
            "onmt_qd_teacher_cache=onmt_qd.bin.teacher_cache:main",
            "onmt_qd_export=onmt_qd.bin.export:main",
        ]
    },
)
