"""Seconds per training epoch and target tokens per second of our OpenNMT-py models
against a plain-torch model of the same shape, on the same real batches, in one run
(issue 12: how far OpenNMT-py's training step is from what the GPU allows).

    python benchmarks/epoch_time.py -config DATA.yaml [-steps 20] [-gpu] [-json OUT.json]
        [-rows teacher_if,teacher,student] [-batches sents64,tokens4096]
        [-hidden_teacher 500] [-layers_teacher 2] [-hidden_student 256]
        [-layers_student 1] [-budget_s 100]

DATA.yaml is a recipe's data_config.yaml (onmt_qd_recipe ... -stages data); the
vocabulary comes from its vocab files, so no checkpoint is needed.

One row = model x batches x precision x implementation:
  model: teacher_if (brnn encoder, LSTM decoder with input feeding), teacher (the same
    without input feeding), student (1 layer, no input feeding); global attention
    "general", dropout 0.3, word vectors as wide as the hidden state;
  batches: sentsN (N sentences) or tokensN (N tokens) from OpenNMT-py's training
    iterator over the config's training corpora (bucket 10000, as the recipes train);
  precision: fp32, and bf16 (onmt_qd.train.precision.use_autocast, as onmt_qd_train
    -autocast bf16 runs) for token batches on CUDA only;
  implementation: onmt (OpenNMT-py's model from build_base_model) or plain (the
    PlainSeq2Seq below: torch only, same parameters, same batches).
Both take the same step, benchmarks/step_time.py's plain mode (cross entropy over
the target tokens, backward, clip 5, SGD): 3 warm-up steps, then the median seconds
per step over -steps steps. Target tokens per second = mean non-pad target tokens per
timed batch / median step; seconds per epoch = the training corpora's target tokens
(sentencepiece pieces + 1 end of sentence per line) / tokens per second. Rows that
would start after -budget_s seconds are reported as skipped; a failing row prints its
error and the others go on; -json is rewritten after every row."""
import argparse
import json
import re
import statistics
import tempfile
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from common import device_of, init_uniform, model_opts, seeded_model, training_batches, \
    training_config  # first: it sets the process up for OpenNMT-py
from onmt.constants import CorpusName, DefaultTokens
from onmt.inputters import build_vocab
from onmt.transforms import get_specials, get_transforms_cls

from onmt_qd.fileio import atomic_output
from onmt_qd.train.precision import use_autocast
from onmt_qd.train.epochs import line_lengths
from step_time import run_mode

DROPOUT = 0.3
MODEL_KINDS = ("teacher_if", "teacher", "student")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


class GeneralAttention(nn.Module):
    """Luong's "general" attention: score(h, a) = h W a, output tanh(W_out [context; h])."""

    def __init__(self, hidden):
        super().__init__()
        self.linear_in = nn.Linear(hidden, hidden, bias=False)
        self.linear_out = nn.Linear(2 * hidden, hidden, bias=False)

    def forward(self, query, memory, padding_mask):
        """query [batch, steps, hidden], memory [batch, src, hidden], padding_mask
        [batch, 1, src] (True at padding) -> [batch, steps, hidden]."""
        scores = torch.bmm(self.linear_in(query), memory.transpose(1, 2))
        weights = torch.softmax(scores.masked_fill(padding_mask, float("-inf")), -1)
        context = torch.bmm(weights, memory)
        return torch.tanh(self.linear_out(torch.cat([context, query], -1)))


class PlainSeq2Seq(nn.Module):
    """The reference: a bi-LSTM encoder, an LSTM decoder (one nn.LSTM call over the
    whole target, or without it a stack of nn.LSTMCell stepped one token at a time with
    input feeding), general attention and a linear generator, in plain torch. Its
    forward takes and returns what NMTModel's does, so the same step times both."""

    def __init__(self, vocab_size, padding, layers, hidden, input_feed, dropout):
        super().__init__()
        if hidden % 2:
            raise ValueError(f"hidden size {hidden} must be even (the bi-LSTM encoder "
                             "gives each direction half of it)")
        self.src_embeddings = nn.Embedding(vocab_size, hidden, padding_idx=padding)
        self.tgt_embeddings = nn.Embedding(vocab_size, hidden, padding_idx=padding)
        self.dropout = nn.Dropout(dropout)
        between = dropout if layers > 1 else 0.0
        self.encoder = nn.LSTM(hidden, hidden // 2, layers, batch_first=True,
                               bidirectional=True, dropout=between)
        if input_feed:
            self.cells = nn.ModuleList(nn.LSTMCell(2 * hidden if i == 0 else hidden, hidden)
                                       for i in range(layers))
        else:
            self.decoder = nn.LSTM(hidden, hidden, layers, batch_first=True, dropout=between)
        self.input_feed = input_feed
        self.attention = GeneralAttention(hidden)
        self.generator = nn.Linear(hidden, vocab_size)

    def forward(self, src, tgt, src_len):
        src, dec_in = src[:, :, 0], tgt[:, :-1, 0]
        packed = pack_padded_sequence(self.dropout(self.src_embeddings(src)), src_len.cpu(),
                                      batch_first=True, enforce_sorted=False)
        memory, (h, c) = self.encoder(packed)
        memory, _ = pad_packed_sequence(memory, batch_first=True, total_length=src.size(1))
        positions = torch.arange(src.size(1), device=src.device)
        padding_mask = (positions[None, :] >= src_len[:, None]).unsqueeze(1)
        # [layers * 2 directions, batch, hidden / 2] -> [layers, batch, hidden]
        state = (torch.cat([h[0::2], h[1::2]], 2), torch.cat([c[0::2], c[1::2]], 2))
        emb = self.dropout(self.tgt_embeddings(dec_in))
        if not self.input_feed:
            output, _ = self.decoder(emb, state)
            return self.dropout(self.attention(output, memory, padding_mask)), {}
        states = [(state[0][i], state[1][i]) for i in range(len(self.cells))]
        feed = emb.new_zeros(emb.size(0), self.generator.in_features)
        outputs = []
        for emb_t in emb.unbind(1):
            x = torch.cat([emb_t, feed], 1)
            for i, cell in enumerate(self.cells):
                if i:
                    x = self.dropout(x)
                states[i] = cell(x, states[i])
                x = states[i][0]
            feed = self.dropout(self.attention(x.unsqueeze(1), memory, padding_mask)[:, 0])
            outputs.append(feed)
        return torch.stack(outputs, 1), {}


def batch_spec(text):
    match = re.fullmatch(r"(sents|tokens)([1-9][0-9]*)", text)
    if not match:
        raise ValueError(f"-batches entry '{text}' must be sentsN or tokensN, e.g. sents64")
    return match.group(1), int(match.group(2))


def onmt_opts(config, model=(1, 64, 0), batches=("sents", 64)):
    """model_opts of the model (layers, hidden, input_feed) and the batches."""
    layers, hidden, input_feed = model
    return model_opts(
        config, "-encoder_type", "brnn", "-decoder_type", "rnn", "-rnn_type", "LSTM",
        "-global_attention", "general", "-dropout", str(DROPOUT), "-layers", str(layers),
        "-hidden_size", str(hidden), "-word_vec_size", str(hidden), "-input_feed",
        str(input_feed), "-batch_type", batches[0], "-batch_size", str(batches[1]))


def epoch_target_tokens(opt):
    """Target tokens of one pass over the training corpora as the models see them:
    sentencepiece pieces of each target line plus its end of sentence."""
    if not opt.tgt_subword_model:
        raise ValueError("the data config names no tgt_subword_model: epoch tokens are "
                         "counted with the target sentencepiece model")
    return sum(n + 1 for name, corpus in opt.data.items() if name != CorpusName.VALID
               for n in line_lengths(corpus["path_tgt"], opt.tgt_subword_model))


def build_models(args, config, vocabs, device):
    """{kind: {"onmt": model, "plain": model} or the error that stopped it}."""
    shapes = {"teacher_if": (args.layers_teacher, args.hidden_teacher, 1),
              "teacher": (args.layers_teacher, args.hidden_teacher, 0),
              "student": (args.layers_student, args.hidden_student, 0)}
    padding = vocabs["tgt"][DefaultTokens.PAD]
    models = {}
    for kind in args.rows:
        layers, hidden, input_feed = shapes[kind]
        models[kind] = {"shape": f"{layers}x{hidden}{' input feeding' if input_feed else ''}"}
        builders = {"onmt": lambda: seeded_model(onmt_opts(config, shapes[kind]), vocabs,
                                                 device),
                    "plain": lambda: init_uniform(PlainSeq2Seq(
                        len(vocabs["tgt"]), padding, layers, hidden, input_feed,
                        DROPOUT).to(device))}
        for impl, build in builders.items():
            try:
                model = build()
                models[kind][impl] = model
                print(f"{kind} {models[kind]['shape']} {impl}: "
                      f"{sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
            except Exception as error:  # reported on each of its rows
                models[kind][impl] = error
                print(f"{kind} {impl}: build failed: {error!r}", flush=True)
    return models


def measure(model, precision, batches, padding, device, initial):
    """Median seconds per step of run_mode's plain step, under autocast for bf16
    (use_autocast wraps the forwards in place; the wrappers are removed afterwards)."""
    nn.Module.load_state_dict(model, initial)  # torch's loader, not OpenNMT-py's
    if PRECISIONS[precision] is not None:
        use_autocast(model, PRECISIONS[precision])
    try:
        seconds, _ = run_mode(model, None, batches, padding, 0, device)
    finally:
        for module in (model, model.generator):
            module.__dict__.pop("forward", None)  # back to the class's forward
    return seconds


def ratios(rows):
    by_key = {}
    for row in rows:
        if row.get("s_per_step"):
            by_key.setdefault((row["model"], row["batches"], row["precision"]), {})[
                row["impl"]] = row["s_per_step"]
    return [{"model": m, "batches": b, "precision": p, "onmt_over_plain": t["onmt"] / t["plain"]}
            for (m, b, p), t in by_key.items() if "onmt" in t and "plain" in t]


def write_json(path, header, rows):
    if path:
        with atomic_output(path) as temporary, open(temporary, "w") as handle:
            json.dump({**header, "rows": rows, "ratios": ratios(rows)}, handle, indent=1)


def timed_row(row, model, initial, batches, tokens, padding, device, epoch_tokens):
    """Fill ``row`` with the measurement, or with the error that stopped it."""
    try:
        for failed in (model, batches):
            if isinstance(failed, Exception):
                raise failed
        seconds = measure(model, row["precision"], batches, padding, device, initial)
        row.update(s_per_step=seconds, tgt_tokens_per_step=tokens, tokens_per_s=tokens / seconds,
                   s_per_epoch=epoch_tokens * seconds / tokens)
        return (f"{seconds * 1000:9.1f}{tokens:13.0f}{tokens / seconds:10.0f}"
                f"{row['s_per_epoch']:9.1f}")
    except Exception as error:  # one failing row must not stop the others
        row["error"] = repr(error)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return f"  {row['error']}"


def benchmark(args, config, specs, device, start):
    data_opt = onmt_opts(config)
    vocabs = build_vocab(data_opt, get_specials(data_opt, get_transforms_cls(
        data_opt._all_transform)))
    padding = vocabs["tgt"][DefaultTokens.PAD]
    epoch_tokens = epoch_target_tokens(data_opt)
    header = {"device": torch.cuda.get_device_name(device) if args.gpu else "cpu",
              "torch": torch.__version__, "config": args.config, "steps": args.steps,
              "vocab": len(vocabs["tgt"]), "epoch_target_tokens": epoch_tokens}
    print(f"device {header['device']}, torch {torch.__version__}, vocabulary "
          f"{len(vocabs['tgt'])}, {epoch_tokens:,} target tokens per epoch, "
          f"{args.steps} timed steps after 3 warm-up", flush=True)
    models = build_models(args, config, vocabs, device)
    initial = {(kind, impl): {k: v.clone() for k, v in models[kind][impl].state_dict().items()}
               for kind in models for impl in ("onmt", "plain")
               if isinstance(models[kind][impl], nn.Module)}
    print(f"{'model':<11}{'shape':<22}{'batches':<12}{'prec':<6}{'impl':<7}{'ms/step':>9}"
          f"{'tgt tok/step':>13}{'tok/s':>10}{'s/epoch':>9}", flush=True)
    rows = []
    for batch_type, batch_size in specs:
        name = f"{batch_type}{batch_size}"
        try:
            batches = training_batches(onmt_opts(config, batches=(batch_type, batch_size)),
                                       vocabs, args.steps + 3, device)
            tokens = statistics.mean(int(b["tgt"][:, 1:, 0].ne(padding).sum())
                                     for b in batches[3:])
        except Exception as error:  # reported on each of its rows
            batches, tokens = error, None
        for precision in ["fp32"] + (["bf16"] if args.gpu and batch_type == "tokens" else []):
            for kind in args.rows:
                for impl in ("onmt", "plain"):
                    row = {"model": kind, "shape": models[kind]["shape"], "batches": name,
                           "precision": precision, "impl": impl}
                    if time.perf_counter() - start > args.budget_s:
                        row["error"] = f"skipped: past -budget_s {args.budget_s:g}"
                        result = f"  {row['error']}"
                    else:
                        result = timed_row(row, models[kind][impl], initial.get((kind, impl)),
                                           batches, tokens, padding, device, epoch_tokens)
                    rows.append(row)
                    print(f"{kind:<11}{row['shape']:<22}{name:<12}{precision:<6}{impl:<7}"
                          f"{result}", flush=True)
                    write_json(args.json, header, rows)
    print("onmt / plain torch, seconds per step:", flush=True)
    for r in ratios(rows):
        print(f"  {r['model']:<11}{r['batches']:<12}{r['precision']:<6}"
              f"{r['onmt_over_plain']:6.2f}x", flush=True)


def main():
    start = time.perf_counter()
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-config", required=True, help="a recipe's data_config.yaml")
    p.add_argument("-steps", type=int, default=20, help="timed steps per row")
    p.add_argument("-gpu", action="store_true", help="run on cuda:0")
    p.add_argument("-json", default=None, help="also write the table here")
    p.add_argument("-rows", default=",".join(MODEL_KINDS), help="models, comma-separated")
    p.add_argument("-batches", default="sents64,tokens4096",
                   help="sentsN and tokensN, comma-separated")
    p.add_argument("-hidden_teacher", type=int, default=500)
    p.add_argument("-layers_teacher", type=int, default=2)
    p.add_argument("-hidden_student", type=int, default=256)
    p.add_argument("-layers_student", type=int, default=1)
    p.add_argument("-budget_s", type=float, default=100.0,
                   help="start no row after this many seconds from the start")
    args = p.parse_args()
    args.rows = args.rows.split(",")
    unknown = [r for r in args.rows if r not in MODEL_KINDS]
    if unknown:
        p.error(f"-rows: unknown model '{unknown[0]}'; choose from {','.join(MODEL_KINDS)}")
    if args.steps < 1:
        p.error(f"-steps must be at least 1, got {args.steps}")
    if args.gpu and not torch.cuda.is_available():
        p.error("-gpu: torch sees no CUDA device; run without -gpu for the CPU")
    try:
        specs = [batch_spec(b) for b in args.batches.split(",")]
        with tempfile.TemporaryDirectory(prefix="epoch_time") as folder:
            config = training_config(args.config, folder)
            benchmark(args, config, specs, device_of(args.gpu), start)
    except (ValueError, OSError) as error:  # bad input: the setup's one-line error
        p.error(str(error))
    print(f"total {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
