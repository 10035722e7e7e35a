"""onmt_qd_translate: onmt_translate, where -model may also be an onmt_qd compressed
file. Without -transforms, the model's own inference transforms (SentencePiece)
are used, so output is detokenized text. Every source line gives -n_best output
lines, in order; a blank source line gives empty ones (onmt_translate drops blank
lines, so its output no longer lines up with the source). -src - reads standard
input; -output - (or /dev/stdout) writes standard output."""
import contextlib
import copy
import os
import tempfile

from onmt_qd.bin.common import run_command
from onmt_qd.opts import parse, translate_parser


def default_transforms(opt, checkpoint_opt):
    """Use the model's SentencePiece transform when the user named no transforms."""
    from onmt_qd.evaluate.metrics import valid_transforms

    if opt.transforms:
        return
    opt.transforms = valid_transforms(checkpoint_opt)
    for name in ("src_subword_model", "tgt_subword_model"):
        if not getattr(opt, name, None):
            setattr(opt, name, getattr(checkpoint_opt, name, None))


@contextlib.contextmanager
def translation_opts(opt):
    """opt with -model resolved to a loadable checkpoint and transforms defaulted."""
    from onmt_qd.compat import load_checkpoint
    from onmt_qd.qdz import as_checkpoint_file

    with contextlib.ExitStack() as stack:
        paths = [stack.enter_context(as_checkpoint_file(m)) for m in opt.models]
        default_transforms(opt, load_checkpoint(paths[0])["opt"])
        opt.models = paths
        yield opt


# Studies of beam width (Koehn and Knowles 2017) stop at 1000; past a few dozen, wider
# beams lower BLEU. A larger value is a typo, and beam search allocates per hypothesis.
MAX_BEAM_SIZE = 1000
# Hypotheses in flight (beam x sentences per batch): each holds decoder state and a
# vocabulary-sized row of scores per step; 100,000 rows of a 32k vocabulary are ~13 GB.
MAX_HYPOTHESES = 100_000


def check_decoding(beam_size, batch_size, n_best=1, max_length=None):
    """Decoding options that OpenNMT-py's beam search would fail on with a traceback,
    or that a typo makes large enough to exhaust memory."""
    for option, value in (("-beam_size", beam_size), ("-batch_size", batch_size),
                          ("-n_best", n_best), ("-max_length", max_length)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be at least 1, got {value}")
    if beam_size > MAX_BEAM_SIZE:
        raise ValueError(f"-beam_size {beam_size} is more than {MAX_BEAM_SIZE}: beam search "
                         "keeps that many hypotheses per sentence and would exhaust memory "
                         "(wider beams than a few dozen do not translate better)")
    if n_best > beam_size:
        raise ValueError(f"-n_best {n_best} is more than -beam_size {beam_size}: the search "
                         "keeps beam_size hypotheses; raise -beam_size or lower -n_best")


def check_files(opt, outputs):
    """Inputs readable, outputs (option -> path) writable and none of the inputs,
    before any model is loaded."""
    from onmt_qd.fileio import check_input_file, check_one_stdin, check_outputs

    inputs = [("-src", opt.src), ("-tgt", opt.tgt)] + [("-model", m) for m in opt.models]
    for option, path in inputs:
        if option == "-model" and os.path.isdir(path):
            from onmt_qd.deploy.ct2 import read_manifest

            read_manifest(path)  # a CTranslate2 directory written by onmt_qd_export
        elif path:
            check_input_file(path, option, stdin=option != "-model")
    check_one_stdin(inputs)
    check_outputs(outputs, inputs)


def check_inference(opt, sentences):
    """Refuse, before anything is allocated, -precision int8 on a GPU, and a search whose
    hypotheses in flight (beam x sentences per batch, a batch being at most the corpus)
    would exhaust memory. With -batch_type tokens, sentences per batch are known only
    once tokenized: -beam_size alone is bounded."""
    from onmt_qd.deploy.int8 import check_int8

    check_int8(opt.precision, opt.gpu)
    hypotheses = opt.beam_size * min(opt.batch_size, sentences)
    if opt.batch_type == "sents" and hypotheses > MAX_HYPOTHESES:
        raise ValueError(f"-beam_size {opt.beam_size} x -batch_size {opt.batch_size} is "
                         f"{hypotheses:,} hypotheses at once here, more than "
                         f"{MAX_HYPOTHESES:,} (memory): lower -beam_size or -batch_size")


def non_blank(lines):
    """Indices of the lines OpenNMT-py translates (it drops blank ones)."""
    return [i for i, line in enumerate(lines) if line.strip()]


def _write_lines(path, lines):
    from onmt_qd.fileio import named_write_errors

    with named_write_errors(path), open(path, "w", encoding="utf-8") as handle:
        handle.writelines(f"{line}\n" for line in lines)
    return path


@contextlib.contextmanager
def inference_engine(opt, lines):
    """OpenNMT-py's inference engine, validated and seeded as onmt_translate builds it,
    set to translate the non-blank ``lines`` (and their -tgt lines, for gold scores).
    It writes nothing: the caller writes the re-aligned output."""
    from onmt.inference_engine import InferenceEnginePY
    from onmt.utils.misc import set_random_seed, use_gpu
    from onmt.utils.parse import ArgumentParser

    from onmt_qd.compat import use_contiguous_rnn_decoders
    from onmt_qd.deploy.int8 import apply_precision
    from onmt_qd.fileio import read_text_lines

    keep = non_blank(lines)
    check_inference(opt, len(keep))
    use_contiguous_rnn_decoders()  # beam search on cuDNN needs a contiguous state
    with tempfile.TemporaryDirectory(prefix="onmt_qd_translate_") as tmp, \
            translation_opts(opt):
        engine_opt = copy.copy(opt)
        engine_opt.src = _write_lines(os.path.join(tmp, "src"), [lines[i] for i in keep])
        if opt.tgt:
            references = read_text_lines(opt.tgt, "-tgt")
            if len(references) != len(lines):
                raise ValueError(f"-tgt {opt.tgt} has {len(references)} lines, -src "
                                 f"{opt.src} {len(lines)}: they must be parallel")
            engine_opt.tgt = _write_lines(os.path.join(tmp, "tgt"),
                                          [references[i] for i in keep])
        engine_opt.output, engine_opt.with_score = os.devnull, False
        ArgumentParser.validate_translate_opts(engine_opt)
        ArgumentParser._get_all_transform_translate(engine_opt)
        ArgumentParser._validate_transforms_opts(engine_opt)
        ArgumentParser.validate_translate_opts_dynamic(engine_opt)
        set_random_seed(engine_opt.seed, use_gpu(engine_opt))
        engine = InferenceEnginePY(engine_opt)
        apply_precision(engine.translator.model, opt.precision)  # OpenNMT-py does not
        try:
            yield engine
        finally:
            engine.terminate()


def translate_aligned(engine, lines):
    """(scores, predictions), -n_best of each per source line and in source order;
    blank lines get empty predictions (score 0)."""
    keep = non_blank(lines)
    scores, predictions = engine.infer_file() if keep else ([], [])
    if len(predictions) != len(keep):
        raise ValueError(f"the model's transforms dropped {len(keep) - len(predictions)} of "
                         f"{len(keep)} non-blank source lines (lines that tokenize to "
                         "nothing): remove or fix them, the output would not line up")
    n_best = engine.opt.n_best
    all_scores, all_predictions = [[0.0] * n_best for _ in lines], [[""] * n_best for _ in lines]
    for i, score, prediction in zip(keep, scores, predictions):
        all_scores[i], all_predictions[i] = [float(s) for s in score], prediction
    return all_scores, all_predictions


def warm_up(engine, lines, count):
    """Translate the first ``count`` non-blank ``lines`` and drop the result: a
    process's first translation pays one-time costs (on a GPU, loading kernels and
    planning cuDNN) that a speed measurement must not count."""
    sample = [lines[i] for i in non_blank(lines)[:count]]
    if not sample:
        return
    reports, engine.translator.report_score = engine.translator.report_score, False
    try:  # its score line would read like a result
        engine.infer_list(sample)
    finally:
        engine.translator.report_score = reports


def write_translations(path, scores, predictions, with_score=False):
    """onmt_translate's output format (n_best lines per source line, optionally
    "prediction<TAB>score"), written atomically (or to standard output)."""
    from onmt_qd.fileio import open_output

    with open_output(path) as out:
        for line_scores, line_predictions in zip(scores, predictions):
            for score, prediction in zip(line_scores, line_predictions):
                out.write(f"{prediction}\t{score}\n" if with_score else f"{prediction}\n")


def translate(opt):
    from onmt_qd.fileio import read_text_lines

    check_decoding(opt.beam_size, opt.batch_size, opt.n_best, opt.max_length)
    check_files(opt, {"-output": opt.output})
    lines = read_text_lines(opt.src, "-src")
    if os.path.isdir(opt.models[0]):  # an onmt_qd_export directory: CTranslate2
        from onmt_qd.deploy.ct2 import translate_options

        scores, predictions = translate_options(opt, lines, translate_parser())
    else:
        with inference_engine(opt, lines) as engine:
            scores, predictions = translate_aligned(engine, lines)
    write_translations(opt.output, scores, predictions, opt.with_score)


def main():
    run_command(lambda: translate(parse(translate_parser())), "onmt_qd_translate")


if __name__ == "__main__":
    main()
