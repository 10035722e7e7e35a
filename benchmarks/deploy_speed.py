"""Deployment speed, quality and memory in one run (issue 22): the same sentences at the
same beam through onmt_qd_eval's path (OpenNMT-py's engine, fp32) and through
CTranslate2 float32 and int8 exports of the same Transformer, each at both threadings of
the cores (one translator on all threads, or one single-threaded translator per core);
for an LSTM, onmt_qd_eval at -precision fp32 and int8; optionally the fp32 teacher,
the speed a user starts from. Prints per row sentences/s and output words/s (with the
output's length over the references': a model that stops early is fast in sentences),
its ratio in words/s and BLEU difference to its family's onmt_qd_eval fp32 row (and its
ratio to the teacher's), size on disk, the translating process's memory, and "busy"
when other processes used the cores while it was timed (onmt_qd/machine.py).

    python benchmarks/deploy_speed.py -src TEST.de -tgt TEST.en [-transformer M.pt|M.qdz]
        [-lstm M.pt|M.qdz] [-teacher T.pt] [-beam_size 5] [-batch_size 64] [-json OUT.json]

Every row runs in a fresh process (this script with -row), one after the other: it
loads its model, translates an untimed warm-up batch, then the timed corpus. Memory is
that process's peak resident size once it has translated (VmHWM in /proc/self/status,
Linux), whole and above what it had once onmt_qd was imported: importing onmt_qd
imports torch, which a CTranslate2 server would not hold, so the second figure is the
engine's own (its libraries, the model, the search); onmt_qd_eval's includes its
reference perplexity pass. Not ru_maxrss: Linux carries a parent's high-water mark
into its child's ru_maxrss across fork and exec, so each row would read at least this
(parent) process's size, which holds torch and the export."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

MB = 2 ** 20
TEACHER = "teacher onmt_qd_eval fp32"


def peak_rss():
    """This process's peak resident size in bytes (VmHWM: of its own address space,
    which exec started afresh)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise ValueError("no VmHWM in /proc/self/status: the memory column needs Linux")


def ct2_row(row, sources, references):
    from onmt_qd.deploy.ct2 import DeployedModel, directory_size

    from onmt_qd.machine import LoadMeter

    deployed = DeployedModel(row["model"], inter_threads=row["inter"],
                             intra_threads=row["intra"])
    deployed.translate(sources[:row["batch_size"]], row["beam_size"], row["batch_size"])
    start = time.perf_counter()
    with LoadMeter() as load:
        predictions = deployed.translate(sources, row["beam_size"], row["batch_size"])[1]
    seconds = time.perf_counter() - start
    peak = peak_rss()  # before the scoring imports OpenNMT-py
    from onmt_qd.evaluate.metrics import bleu_chrf, word_count

    hypotheses = [p[0] for p in predictions]
    words = word_count(hypotheses)
    return {"sentences_per_second": round(len(sources) / seconds, 1),
            "words_per_second": round(words / seconds, 1),
            "length_ratio": round(words / max(word_count(references), 1), 3),
            "bleu": round(bleu_chrf(hypotheses, references)[0], 2),
            "size_bytes": directory_size(row["model"]), "machine": load.as_dict()}, peak


def ours_row(row, sources, references):
    from onmt_qd.inference.evaluate import evaluate

    result = evaluate(row["model"], row["src"], row["tgt"], row["beam_size"],
                      row["batch_size"], precision=row["precision"])
    return {key: result[key] for key in ("sentences_per_second", "words_per_second",
                                         "length_ratio", "bleu", "size_bytes", "machine")}, \
        peak_rss()


def run_row(row):
    """-row: measure one row in this process; its result is the last line printed."""
    from onmt_qd.fileio import read_text_lines  # imports onmt_qd, and torch with it

    imports = peak_rss()
    sources, references = read_text_lines(row["src"]), read_text_lines(row["tgt"], "-tgt")
    result, peak = (ct2_row if row["engine"] == "ctranslate2" else ours_row)(
        row, sources, references)
    print(json.dumps({**result, "peak_rss_bytes": peak,
                      "rss_above_imports_bytes": peak - imports}))


def measured(row):
    """``row`` measured in a fresh process."""
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "-row", json.dumps(row)],
                          stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def plan(args, tmp):
    """{name: row} in order, exports written to ``tmp``; each row's "base" names the
    onmt_qd_eval fp32 row of its family, which it is compared with."""
    from onmt_qd.deploy.ct2 import export
    from onmt_qd.machine import usable_cores

    shared = {"src": args.src, "tgt": args.tgt, "beam_size": args.beam_size,
              "batch_size": args.batch_size}
    rows = {}
    if args.teacher:
        rows[TEACHER] = {"engine": "ours", "model": args.teacher, "precision": None,
                         "base": TEACHER}
    if args.transformer:
        base = "onmt_qd_eval fp32"
        rows[base] = {"engine": "ours", "model": args.transformer, "precision": None,
                      "base": base}
        cores = usable_cores()
        for quantization in ("float32", "int8"):
            directory = os.path.join(tmp, quantization)
            export(args.transformer, directory, quantization)
            for inter, intra in ((1, cores), (cores, 1)):
                rows[f"ctranslate2 {quantization} {inter}x{intra}"] = {
                    "engine": "ctranslate2", "model": directory, "inter": inter,
                    "intra": intra, "base": base}
    if args.lstm:
        for precision in ("fp32", "int8"):
            rows[f"lstm -precision {precision}"] = {
                "engine": "ours", "model": args.lstm,
                "precision": precision if precision != "fp32" else None,
                "base": "lstm -precision fp32"}
    return {name: {**shared, **row} for name, row in rows.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-row", help=argparse.SUPPRESS)  # a worker process: one row, as JSON
    p.add_argument("-src")
    p.add_argument("-tgt")
    p.add_argument("-transformer")
    p.add_argument("-lstm")
    p.add_argument("-teacher", help="fp32 teacher: every row's speed is also given as a "
                   "ratio to its onmt_qd_eval speed")
    p.add_argument("-beam_size", type=int, default=5)
    p.add_argument("-batch_size", type=int, default=64)
    p.add_argument("-json")
    args = p.parse_args()
    if args.row:
        return run_row(json.loads(args.row))
    if not (args.src and args.tgt):
        p.error("-src and -tgt are required")
    from onmt_qd.fileio import open_output, read_text_lines

    with tempfile.TemporaryDirectory() as tmp:
        rows = {name: {**row, **measured(row)} for name, row in plan(args, tmp).items()}
    sentences = len(read_text_lines(args.src))
    print(f"{sentences} sentences, beam {args.beam_size}, batch {args.batch_size}; "
          "x (in output words/s), dBLEU: against its family's onmt_qd_eval fp32 row; len: "
          "output words over reference words; RSS: peak resident MB of the row's process "
          "(above its imports); busy: other processes used the cores while it was timed")
    teacher = rows.get(TEACHER)
    for name, row in rows.items():
        base = rows[row["base"]]
        row["speed_ratio"] = round(row["words_per_second"] / base["words_per_second"], 2)
        row["bleu_difference"] = round(row["bleu"] - base["bleu"], 2)
        versus = ""
        if teacher:
            row["speed_ratio_to_teacher"] = round(
                row["words_per_second"] / teacher["words_per_second"], 2)
            versus = f"  x{row['speed_ratio_to_teacher']:5.2f} teacher"
        busy = "  busy" if row["machine"]["busy"] else ""
        print(f"{name:28s} {row['sentences_per_second']:8.1f} sent/s "
              f"{row['words_per_second']:8.1f} words/s  len {row['length_ratio']:.2f}  "
              f"x{row['speed_ratio']:5.2f}  BLEU {row['bleu']:6.2f} "
              f"({row['bleu_difference']:+.2f})  {row['size_bytes']:>11,} bytes  "
              f"RSS {row['peak_rss_bytes'] / MB:6.0f} MB "
              f"({row['rss_above_imports_bytes'] / MB:5.0f}){versus}{busy}")
    if args.json:
        with open_output(args.json) as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
