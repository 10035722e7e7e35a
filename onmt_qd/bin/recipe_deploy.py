"""The recipe's deploy stage command: ``python -m onmt_qd.bin.recipe_deploy PLAN.yaml``
scores each model of the plan through its deployment path (recipe/deployment.py decides
which) and writes NAME.json, NAME.ROLE.hyp and NAME.ct2 in the plan's folder."""
import os
import sys

import yaml

from onmt_qd.recipe.deployment import DEPLOYED, QUANTIZATION, REFERENCE, deployment


def deploy_model(item, plan):
    """The runs of one model of the plan: its deployment path (evaluated, or skipped
    with the reason) and, for the reference model, fp32 through OpenNMT-py first (a
    CTranslate2 directory, already deployed, is timed once, in both roles; a teacher
    ensemble, which CTranslate2 does not decode, is timed as the reference only)."""
    from onmt_qd.deploy.ct2 import export
    from onmt_qd.inference.evaluate import evaluate
    from onmt_qd.qdz import load_any

    folder, name, models = plan["folder"], item["name"], item["files"]
    model = models[0]
    gpu = 0 if plan["gpu"] else -1

    def run(role, path, precision=None):
        hyp = os.path.join(folder, f"{name}.{role}.hyp")
        result = evaluate(path, plan["src"], plan["tgt"], plan["beam_size"],
                          plan["batch_size"], gpu, hyp, precision=precision)
        return {"role": role, **result, "hyp": os.path.basename(hyp)}

    runs = [run(REFERENCE, models)] if item["reference"] else []
    if len(models) > 1:  # a teacher ensemble: OpenNMT-py decodes it, CTranslate2 does not
        return runs + [{"role": DEPLOYED, "engine": {"name": "CTranslate2",
                                                      "precision": QUANTIZATION},
                        "skipped": f"an ensemble of {len(models)} models: CTranslate2 "
                                   "decodes no ensemble"}]
    if os.path.isdir(model):  # a CTranslate2 teacher: deployed as the recipe was given it
        return runs + [{**runs[0], "role": DEPLOYED, "same_run_as": REFERENCE} if runs
                       else run(DEPLOYED, model)]
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

    from onmt_qd.machine import idle_cores

    with open(plan_path) as handle:
        plan = yaml.safe_load(handle)
    for item in plan["models"]:
        # every core the plan gives (not the runner's share for side-by-side jobs), less
        # those other jobs keep busy now: threads on taken cores thrash (10x slower)
        threads = min(plan["threads"], idle_cores())
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # what a CTranslate2 translator takes
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
