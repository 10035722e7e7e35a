"""Deployment speed in one run (issue 22): the same sentences at the same beam through
onmt_qd_eval's path (OpenNMT-py's engine, fp32) and through CTranslate2 float32 and int8
exports of the same Transformer, each at both threadings of the cores (one translator
on all threads, or one single-threaded translator per core); for an LSTM, onmt_qd_eval
at -precision fp32 and int8. Prints sentences/s, BLEU and the speed ratio to ours.

    python benchmarks/deploy_speed.py -src TEST.de -tgt TEST.en [-transformer M.pt|M.qdz]
        [-lstm M.pt|M.qdz] [-beam_size 5] [-batch_size 64] [-json OUT.json]

Every row is timed after an untimed warm-up batch; model loading is not timed."""
import argparse
import json
import os
import tempfile
import time

from onmt_qd.inference.evaluate import evaluate
from onmt_qd.deploy.ct2 import DeployedModel, directory_size, export
from onmt_qd.evaluate.metrics import bleu_chrf
from onmt_qd.fileio import open_output, read_text_lines


def ct2_row(model_dir, sources, references, beam_size, batch_size, inter, intra):
    deployed = DeployedModel(model_dir, inter_threads=inter, intra_threads=intra)
    deployed.translate(sources[:batch_size], beam_size, batch_size)  # warm-up
    start = time.perf_counter()
    predictions = deployed.translate(sources, beam_size, batch_size)[1]
    seconds = time.perf_counter() - start
    bleu = bleu_chrf([p[0] for p in predictions], references)[0]
    return {"sentences_per_second": round(len(sources) / seconds, 1), "bleu": round(bleu, 2),
            "size_bytes": directory_size(model_dir), "threads": f"{inter}x{intra}"}


def ours_row(model, src, tgt, beam_size, batch_size, precision="fp32"):
    result = evaluate(model, src, tgt, beam_size, batch_size, precision=precision)
    return {key: result[key] for key in ("sentences_per_second", "bleu", "size_bytes")}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-src", required=True)
    p.add_argument("-tgt", required=True)
    p.add_argument("-transformer")
    p.add_argument("-lstm")
    p.add_argument("-beam_size", type=int, default=5)
    p.add_argument("-batch_size", type=int, default=64)
    p.add_argument("-json")
    args = p.parse_args()
    sources, references = read_text_lines(args.src), read_text_lines(args.tgt, "-tgt")
    rows = {}
    if args.transformer:
        rows["onmt_qd_eval fp32"] = ours_row(args.transformer, args.src, args.tgt,
                                             args.beam_size, args.batch_size)
        with tempfile.TemporaryDirectory() as tmp:
            for quantization in ("float32", "int8"):
                directory = os.path.join(tmp, quantization)
                export(args.transformer, directory, quantization)
                cores = os.cpu_count() or 1
                for inter, intra in ((1, cores), (cores, 1)):
                    rows[f"ctranslate2 {quantization} {inter}x{intra}"] = ct2_row(
                        directory, sources, references, args.beam_size, args.batch_size,
                        inter, intra)
    if args.lstm:
        for precision in ("fp32", "int8"):
            rows[f"lstm -precision {precision}"] = ours_row(
                args.lstm, args.src, args.tgt, args.beam_size, args.batch_size, precision)
    print(f"{len(sources)} sentences, beam {args.beam_size}, batch {args.batch_size}")
    for name, row in rows.items():
        base = rows["onmt_qd_eval fp32" if "lstm" not in name else "lstm -precision fp32"]
        ratio = row["sentences_per_second"] / base["sentences_per_second"]
        print(f"{name:28s} {row['sentences_per_second']:8.1f} sent/s  x{ratio:5.2f}  "
              f"BLEU {row['bleu']:6.2f}  {row['size_bytes']:>10,} bytes")
    if args.json:
        with open_output(args.json) as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
