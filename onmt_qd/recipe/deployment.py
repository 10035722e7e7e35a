"""The recipe's deploy stage: every model scored as a user would ship and run it. A
Transformer is exported to a CTranslate2 int8 directory (onmt_qd_export) and evaluated
from it; an LSTM, which CTranslate2 does not convert, is evaluated by OpenNMT-py with
-precision int8 (torch dynamic quantization, CPU only: skipped, with the reason, on a
GPU run). The teacher is also evaluated in fp32 through OpenNMT-py: the reference of
the deployed speed ratios. All of it runs in one process, one model at a time on every
core, so that the speeds it measures compare with each other (the evaluate stage may
time models side by side, a core each).

Run by the stage as ``python -m onmt_qd.recipe.deployment PLAN.yaml``; writes, in the
plan's folder, NAME.json (the model's runs), NAME.ROLE.hyp (their translations) and
NAME.ct2 (an export)."""
import os
import sys

import yaml

QUANTIZATION = "int8"
DEPLOYED, REFERENCE = "deployed", "reference"  # a run's role


def deploy_threads():
    """Threads the deploy stage translates with: the user's OMP_NUM_THREADS (which the
    runner keeps), else every core, as the stage runs alone. CTranslate2 gets as many
    single-threaded translators (ct2.DeployedModel), so both engines use the same cores."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else os.cpu_count() or 1


def deployment(model_opt, gpu):
    """(engine, None) of the deployment path of a model built from ``model_opt``, or
    (engine, why it does not apply)."""
    from onmt_qd.deploy.ct2 import is_transformer, sentencepiece_models

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


def deploy_model(item, plan):
    """The runs of one model of the plan: its deployment path (evaluated, or skipped
    with the reason) and, for the reference model, fp32 through OpenNMT-py first."""
    from onmt_qd.deploy.ct2 import export
    from onmt_qd.inference.evaluate import evaluate
    from onmt_qd.qdz import load_any

    folder, name, model = plan["folder"], item["name"], item["file"]
    gpu = 0 if plan["gpu"] else -1

    def run(role, path, precision="fp32"):
        hyp = os.path.join(folder, f"{name}.{role}.hyp")
        result = evaluate(path, plan["src"], plan["tgt"], plan["beam_size"],
                          plan["batch_size"], gpu, hyp, precision=precision)
        return {"role": role, **result, "hyp": os.path.basename(hyp)}

    runs = [run(REFERENCE, model)] if item["reference"] else []
    engine, skipped = deployment(load_any(model)["opt"], plan["gpu"])
    if skipped:
        runs.append({"role": DEPLOYED, "engine": {"name": engine, "precision": QUANTIZATION},
                     "skipped": skipped})
    elif engine == "CTranslate2":
        directory = os.path.join(folder, f"{name}.ct2")
        export(model, directory, QUANTIZATION)
        runs.append(run(DEPLOYED, directory))
    else:
        runs.append(run(DEPLOYED, model, QUANTIZATION))
    return runs


def deploy_all(plan_path):
    import torch

    from onmt_qd.inference.evaluate import write_json

    with open(plan_path) as handle:
        plan = yaml.safe_load(handle)
    torch.set_num_threads(plan["threads"])  # not the runner's share for side-by-side jobs
    for item in plan["models"]:
        runs = deploy_model(item, plan)
        for one in runs:
            print(f"{item['name']}: {one['engine']['name']} {one['engine']['precision']}: " +
                  (f"skipped: {one['skipped']}" if "skipped" in one else
                   f"BLEU {one['bleu']}, {one['sentences_per_second']} sentences/s"),
                  flush=True)
        write_json(runs, os.path.join(plan["folder"], f"{item['name']}.json"))


def main():
    from onmt_qd.bin.common import run_command

    run_command(lambda: deploy_all(sys.argv[1]), "onmt_qd_recipe (deploy)")


if __name__ == "__main__":
    main()
