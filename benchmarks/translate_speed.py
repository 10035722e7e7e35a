"""Translation speed (beam search, as onmt_qd_eval runs it) against the batch size, in
one run: where the time of a translation goes, per decoding step or per sentence
(issue 12: a 1-layer student on a GPU should translate >= 2,000 sentences/s).

    python benchmarks/translate_speed.py -model M.qdz|M.pt -src TEST.de
        [-batch_sizes 64,500,2000] [-beam_size 5] [-gpu] [-count_ops] [-json OUT.json]
        [-subword_model SPM.model]

For each batch size: the model is loaded (not timed), the whole -src is translated
once to warm up (its time is the row's first_run_seconds: on a GPU it includes
loading kernels and planning cuDNN) and once timed (translation alone, as
onmt_qd_eval's translate_seconds), and the row gives sentences per second, decoding
steps (calls of the model's generator), seconds per step, and the speed-up over the
first batch size of the list. -count_ops adds, from one more untimed run under a dispatch mode, the
ATen operations per decoding step and per sentence: on a GPU every one costs a
kernel launch or at least a dispatch, so their count is what bounds a small model's
beam search there, and it is the same on any device."""
import argparse
import collections
import json
import os
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import common  # noqa: F401 - first: it sets the process up for OpenNMT-py
from onmt_qd.evaluate.metrics import word_count
from onmt_qd.fileio import atomic_output, read_text_lines
from onmt_qd.inference.engine import inference_engine, load_model, translate_aligned
from onmt_qd.machine import LoadMeter
from onmt_qd.opts import parse, translate_parser


class OpCounter(TorchDispatchMode):
    """Counts every ATen operation run under it, by name."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def timed(gpu, function, *args):
    """(seconds that ``function(*args)`` takes, the GPU's queue included, its result)."""
    if gpu:
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function(*args)
    if gpu:
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def translation_opts(model, src, batch_size, beam_size, gpu, subword_model):
    subwords = (["-transforms", "sentencepiece", "-src_subword_model", subword_model,
                 "-tgt_subword_model", subword_model] if subword_model else [])
    return parse(translate_parser(), ["-model", model, "-src", src, "-output", os.devnull,
                                      "-beam_size", str(beam_size), "-batch_size",
                                      str(batch_size), "-gpu", "0" if gpu else "-1",
                                      "-log_file", os.devnull, *subwords])


def measure(loaded, opt, lines, count_ops):
    """One row: the timed translation of ``lines`` at -batch_size with ``loaded``."""
    gpu, batch_size = opt.gpu >= 0, opt.batch_size
    with inference_engine(opt, lines, loaded) as engine:
        steps = [0]
        hook = engine.translator.model.generator.register_forward_hook(
            lambda *_: steps.__setitem__(0, steps[0] + 1))
        first_seconds = timed(gpu, translate_aligned, engine, lines)[0]  # kernels, cuDNN
        steps[0] = 0
        with LoadMeter() as load:
            seconds, (_, predictions) = timed(gpu, translate_aligned, engine, lines)
        words = word_count([best[0] for best in predictions])
        row = {"batch_size": batch_size, "sentences": len(lines), "seconds": round(seconds, 3),
               "first_run_seconds": round(first_seconds, 3),
               "sentences_per_second": round(len(lines) / seconds, 1),
               "words_per_second": round(words / seconds, 1),
               "words_per_sentence": round(words / len(lines), 2), "steps": steps[0],
               "ms_per_step": round(1000 * seconds / steps[0], 2), "machine": load.as_dict()}
        if count_ops:
            counter = OpCounter()
            with counter:
                translate_aligned(engine, lines)
            total = sum(counter.ops.values())
            row.update(ops_per_step=round(total / steps[0], 1),
                       ops_per_sentence=round(total / len(lines), 1),
                       top_ops=dict(counter.ops.most_common(8)))
    hook.remove()  # the model serves the next batch size
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-model", required=True)
    p.add_argument("-src", required=True)
    p.add_argument("-batch_sizes", default="64,500,2000")
    p.add_argument("-beam_size", type=int, default=5)
    p.add_argument("-gpu", action="store_true")
    p.add_argument("-count_ops", action="store_true")
    p.add_argument("-subword_model", default=None,
                   help="the model's SentencePiece file, where the path its checkpoint "
                   "names does not exist (a model carried to another machine)")
    p.add_argument("-json", default=None)
    args = p.parse_args()
    lines = read_text_lines(args.src, "-src")
    device = torch.cuda.get_device_name(0) if args.gpu else \
        f"cpu, {torch.get_num_threads()} threads"
    print(f"{args.model}: {len(lines)} sentences, beam {args.beam_size}, {device}, "
          f"torch {torch.__version__}", flush=True)
    rows = []
    loaded = None
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        opt = translation_opts(args.model, args.src, batch_size, args.beam_size, args.gpu,
                               args.subword_model)
        loaded = loaded or load_model(args.model, opt)  # read and built once
        row = measure(loaded, opt, lines, args.count_ops)
        row["speedup"] = round(row["sentences_per_second"]
                               / (rows or [row])[0]["sentences_per_second"], 2)
        rows.append(row)
        ops = (f"  {row['ops_per_step']} ops/step, {row['ops_per_sentence']} ops/sentence"
               if args.count_ops else "")
        print(f"batch {batch_size:5d}: {row['sentences_per_second']:8.1f} sentences/s "
              f"{row['words_per_second']:8.1f} words/s"
              f"{' (busy)' if row['machine']['busy'] else ''} "
              f"({row['speedup']:.2f}x), {row['steps']} steps, "
              f"{row['ms_per_step']:.2f} ms/step (first run {row['first_run_seconds']:.2f} s)"
              f"{ops}", flush=True)
        if args.json:
            with atomic_output(args.json) as temporary, open(temporary, "w") as handle:
                json.dump({"model": args.model, "device": device, "rows": rows}, handle,
                          indent=1)


if __name__ == "__main__":
    sys.exit(main())
