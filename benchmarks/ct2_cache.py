"""A teacher cache built through CTranslate2 against the one OpenNMT-py builds for the
same teacher (issue 34 item 5): onmt_qd_teacher_cache run twice over the same data
config, -teacher_model the checkpoint, then its CTranslate2 export (float32 unless
-quantization says otherwise), each alone on every core; prints each build's seconds
and how far the two caches agree position by position (top-1 token, top-k sets, the
top-1 log-probability and the rest mass).

    python benchmarks/ct2_cache.py -config DATA_CONFIG.yaml -teacher T.pt [-topk 8]
        [-quantization float32] [-train_lines N] [-json OUT.json]"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import training_config  # noqa: E402


def build(config, teacher, topk, output):
    """Seconds onmt_qd_teacher_cache takes, in a process of its own."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "onmt_qd.bin.teacher_cache", "-config", config,
                    "-teacher_model", teacher, "-topk", str(topk), "-output", output],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def agreement(first, second):
    """How the two caches' rows compare (the same batches in the same order)."""
    from onmt_qd.distill.cache import TeacherCache, map_files

    a, b = (map_files(path, TeacherCache(path).header) for path in (first, second))
    if not np.array_equal(a["gold.bin"], b["gold.bin"]):
        raise ValueError("the caches hold other target positions")
    ids_a, ids_b = np.asarray(a["ids.bin"]), np.asarray(b["ids.bin"])
    same_sets = np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(ids_a, ids_b)])
    top1 = np.abs(a["logp.bin"][:, 0].astype(np.float64) - b["logp.bin"][:, 0])
    finite = np.isfinite(a["rest.bin"]) & np.isfinite(b["rest.bin"])
    rest = np.abs(np.exp(a["rest.bin"][finite].astype(np.float64)) -
                  np.exp(b["rest.bin"][finite].astype(np.float64)))
    return {"positions": int(len(ids_a)), "top1_same": round(float(np.mean(
        ids_a[:, 0] == ids_b[:, 0])), 4), "topk_overlap": round(float(same_sets), 4),
        "top1_logp_mean_abs_difference": round(float(top1.mean()), 4),
        "top1_logp_max_abs_difference": round(float(top1.max()), 4),
        "rest_mass_mean_abs_difference": round(float(rest.mean()), 5)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-config", required=True, help="a recipe's data_config.yaml")
    parser.add_argument("-teacher", required=True, help="the teacher's checkpoint")
    parser.add_argument("-topk", type=int, default=8)
    parser.add_argument("-quantization", default="float32")
    parser.add_argument("-train_lines", type=int, default=0)
    parser.add_argument("-json")
    args = parser.parse_args()
    from onmt_qd.deploy.ct2 import export

    with tempfile.TemporaryDirectory() as folder:
        config = training_config(args.config, folder, args.train_lines)
        directory = os.path.join(folder, "teacher.ct2")
        export(args.teacher, directory, args.quantization)
        result = {"teacher": args.teacher, "quantization": args.quantization,
                  "topk": args.topk}
        for name, teacher in (("opennmt_py", args.teacher), ("ctranslate2", directory)):
            before = os.getloadavg()[0]
            seconds = build(config, teacher, args.topk, os.path.join(folder, name))
            result[f"{name}_seconds"] = round(seconds, 1)
            # the build is a child process: the load average says whether others ran too
            result[f"{name}_load_average"] = [round(before, 2), round(os.getloadavg()[0], 2)]
        result.update(agreement(os.path.join(folder, "opennmt_py"),
                                os.path.join(folder, "ctranslate2")))
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
