"""The recipe's deploy stage: every model scored as a user would ship and run it. A
Transformer is exported to a CTranslate2 int8 directory (onmt_qd_export) and evaluated
from it; an LSTM, which CTranslate2 does not convert, is evaluated by OpenNMT-py with
-precision int8 (torch dynamic quantization, CPU only: skipped, with the reason, on a
GPU run). The teacher is also evaluated in fp32 through OpenNMT-py: the reference of
the deployed speed ratios. All of it runs in one process, one model at a time on every
core, so that the speeds it measures compare with each other (the evaluate stage may
time models side by side, a core each).

This module decides; the stage runs ``python -m onmt_qd.bin.recipe_deploy PLAN.yaml``
(bin/, the floor that may use both inference/ and recipe/), which writes, in the plan's
folder, NAME.json (the model's runs), NAME.ROLE.hyp (their translations) and NAME.ct2
(an export)."""
QUANTIZATION = "int8"
DEPLOYED, REFERENCE = "deployed", "reference"  # a run's role


def deployment(model_opt, gpu):
    """(engine, None) of the deployment path of a model built from ``model_opt``, or
    (engine, why it does not apply)."""
    from onmt_qd.deploy.ct2 import is_transformer
    from onmt_qd.models import sentencepiece_models

    if is_transformer(model_opt):
        if sentencepiece_models(model_opt) is None:
            return "CTranslate2", ("not trained with the sentencepiece transform: an "
                                   "onmt_qd_export directory tokenizes with its "
                                   "SentencePiece models only")
        return "CTranslate2", None
    if gpu:
        return "OpenNMT-py", ("-precision int8 (torch dynamic quantization) has CPU kernels "
                              "only and this run evaluates on the GPU; CTranslate2, which "
                              "runs int8 on a GPU, converts Transformers only")
    return "OpenNMT-py", None
