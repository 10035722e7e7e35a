"""CTranslate2 export of an OpenNMT-py Transformer and translation from the directory.

The conversion is CTranslate2's own (``ctranslate2.converters.OpenNMTPyConverter``);
this module adds what it lacks: a ``.qdz`` or quantized checkpoint as input, the
model's SentencePiece model(s) in the directory, a manifest naming the source and its
SHA-256, and an all-or-nothing write (a temporary sibling directory renamed at the
end: a directory without a manifest is refused). The converter is given a checkpoint we
have just written from a weights-only load, holding only what it reads."""
import copy
import hashlib
import json
import math
import os
import shutil
import tempfile

from onmt_qd.constants import CT2_QUANTIZATIONS

MANIFEST = "manifest.json"
MANIFEST_DIGEST = "manifest_sha256"  # the manifest's own fields, so an edit is seen
FORMAT = "onmt_qd-ctranslate2"
SOURCE_SPM, TARGET_SPM = "source.spm.model", "target.spm.model"
SHARED_SPM = "spm.model"  # one file when source and target share their model
# OpenNMT-py 3.5.1's default attention kernel; the same arithmetic as "scaled-dot", the
# only value CTranslate2's converter accepts.
FLASH_ATTENTION = "scaled-dot-flash"
# On 2 CPU cores, two single-threaded translators working on different batches beat
# one translator on two threads (docs/results.md, benchmarks/deploy_speed.py).
DEFAULT_INTRA_THREADS = 1


def cpu_threads():
    """The cores this process may use: OMP_NUM_THREADS when set, else the CPUs it is
    allowed to run on. Not torch.get_num_threads(): creating a CTranslate2 translator
    sets the OpenMP threads torch shares to its intra_threads."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    from onmt_qd.machine import usable_cores

    return int(value) if value.isdigit() and int(value) > 0 else usable_cores()


def directory_size(path):
    """Bytes of the files under ``path`` (what a user ships)."""
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


# onmt_qd_translate options that CTranslate2's search does not take: refused unless
# left at their defaults (-precision: engines.ctranslate2.CTranslate2Engine.check_options;
# -src/-tgt_subword_model name the tokenizers of a directory that is no onmt_qd export:
# describe_directory).
UNSUPPORTED_OPTIONS = ("tgt", "transforms", "batch_type", "min_length", "ratio",
                       "length_penalty", "alpha", "beta", "coverage_penalty",
                       "block_ngram_repeat", "ignore_when_blocking", "replace_unk",
                       "random_sampling_topk", "random_sampling_topp", "stepwise_penalty",
                       "phrase_table", "attn_debug", "align_debug", "dump_beam",
                       "verbose", "self_attn_type")


def check_translate_options(opt):
    """An export directory translates alone, with the options CTranslate2 applies."""
    from onmt_qd.opts import translate_parser

    parser = translate_parser()
    if len(opt.models) > 1:
        raise ValueError("-model: an onmt_qd_export directory translates alone, not in an "
                         "ensemble; give one -model")
    for name in UNSUPPORTED_OPTIONS:
        if getattr(opt, name, None) != parser.get_default(name):
            raise ValueError(f"-{name} does not apply to a CTranslate2 directory "
                             f"({opt.models[0]}): leave it out, or translate the checkpoint")


def deployed_model(opt):
    """The DeployedModel of translation options ``opt`` (-model DIR, -gpu, and for a
    directory that is no onmt_qd export, -src/-tgt_subword_model)."""
    return DeployedModel(opt.models[0], "cpu" if opt.gpu < 0 else "cuda", max(opt.gpu, 0),
                         source_spm=getattr(opt, "src_subword_model", None),
                         target_spm=getattr(opt, "tgt_subword_model", None))


def is_transformer(opt):
    """Whether a checkpoint's options build a Transformer (what CTranslate2 converts)."""
    return (getattr(opt, "encoder_type", None), getattr(opt, "decoder_type", None)) == \
        ("transformer", "transformer")


def check_transformer(opt, path):
    """CTranslate2 converts Transformers only; an LSTM has OpenNMT-py's int8 path."""
    kinds = (getattr(opt, "encoder_type", None), getattr(opt, "decoder_type", None))
    if not is_transformer(opt):
        raise ValueError(f"-model {path} is a {'/'.join(map(str, kinds))} model and "
                         "CTranslate2 converts Transformers only: for int8 inference of this "
                         "model use onmt_qd_translate -precision int8 (CPU)")


def subword_models(opt, path):
    """The checkpoint's SentencePiece model files (source, target), found as
    models.resolve_subword_models finds them."""
    from onmt_qd.models import resolve_subword_models, sentencepiece_models

    if sentencepiece_models(opt) is None:
        raise ValueError(f"-model {path} was not trained with the sentencepiece transform: "
                         "the export carries the model's SentencePiece models and can "
                         "tokenize with nothing else")
    resolve_subword_models(opt, path)
    return sentencepiece_models(opt)


def parameter_count(checkpoint):
    """Parameters of the model (as onmt_qd_eval counts them: buffers such as the
    position-encoding table left out), built on the meta device: no memory, no weights."""
    import torch
    from onmt.inputters.inputter import dict_to_vocabs
    from onmt.model_builder import build_base_model

    from onmt_qd.models import model_opts_of

    with torch.device("meta"):
        model = build_base_model(model_opts_of(checkpoint), dict_to_vocabs(checkpoint["vocab"]))
    return sum(p.numel() for p in model.parameters())


def converter_checkpoint(checkpoint):
    """What CTranslate2's converter reads, with a copy of the options whose attention
    kernel it accepts (no onmt_qd keys: the shadow weights would double the file)."""
    opt = copy.copy(checkpoint["opt"])
    if getattr(opt, "self_attn_type", None) == FLASH_ATTENTION:
        opt.self_attn_type = "scaled-dot"
    return {"model": checkpoint["model"], "generator": checkpoint["generator"], "opt": opt,
            "vocab": checkpoint["vocab"]}


def check_output(output):
    """-output must be a new path in an existing folder, or an earlier export (replaced)."""
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise ValueError(f"-output {output}: folder {folder} does not exist; create it first "
                         "(mkdir -p) or choose another path")
    if os.path.lexists(output) and not os.path.isfile(os.path.join(output, MANIFEST)):
        raise ValueError(f"-output {output} exists and is not an onmt_qd_export directory: "
                         "choose a new path (an earlier export there would be replaced)")


def export(model, output, quantization="int8"):
    """Write the CTranslate2 directory ``output`` for the Transformer ``model`` (.pt,
    quantized checkpoint or .qdz); returns its manifest."""
    import torch
    from ctranslate2.converters import OpenNMTPyConverter

    from onmt_qd.compat import prepare_onmt
    from onmt_qd.fileio import check_input_file, same_file, sha256
    from onmt_qd.qdz import load_any

    prepare_onmt()  # CTranslate2's converter loads the checkpoint weights-only too

    if quantization not in CT2_QUANTIZATIONS:
        raise ValueError(f"-quantization {quantization}: choose one of "
                         f"{', '.join(CT2_QUANTIZATIONS)}")
    check_input_file(model, "-model")
    check_output(output)
    checkpoint = load_any(model)
    check_transformer(checkpoint["opt"], model)
    spm_models = subword_models(checkpoint["opt"], model)
    n_params = parameter_count(checkpoint)

    def stage(staging):
        nonlocal checkpoint
        with tempfile.TemporaryDirectory(prefix="onmt_qd_export_") as tmp:
            path = os.path.join(tmp, "model.pt")
            torch.save(converter_checkpoint(checkpoint), path)
            checkpoint = None  # the converter loads its own copy
            OpenNMTPyConverter(path).convert(staging, quantization=quantization, force=True)
        names = (SHARED_SPM,) * 2 if same_file(*spm_models) else (SOURCE_SPM, TARGET_SPM)
        for name, spm in zip(names, spm_models):
            shutil.copyfile(spm, os.path.join(staging, name))
        return {"source": os.path.abspath(model), "source_sha256": sha256(model),
                "quantization": quantization, "source_spm": names[0],
                "target_spm": names[1], "n_params": n_params}
    return write_export(output, stage)


def write_export(output, stage):
    """Write an export directory at ``output`` whole or not at all: ``stage(folder)``
    fills a temporary sibling folder and returns the manifest's fields about the model;
    the manifest (versions, every file's size and SHA-256, its own digest) is written
    last, and the folder renamed onto ``output`` (an earlier export there replaced)."""
    import ctranslate2

    import onmt_qd
    from onmt_qd.fileio import remove_stale_temporaries, sha256, temporary_name

    target = os.path.abspath(output)
    remove_stale_temporaries(target)
    staging = temporary_name(target)
    try:
        os.makedirs(staging)
        fields = stage(staging)
        manifest = {"format": FORMAT, **fields, "onmt_qd_version": onmt_qd.__version__,
                    "ctranslate2_version": ctranslate2.__version__,
                    "files": {name: {"bytes": os.path.getsize(os.path.join(staging, name)),
                                     "sha256": sha256(os.path.join(staging, name))}
                              for name in sorted(os.listdir(staging))}}
        manifest[MANIFEST_DIGEST] = _manifest_digest(manifest)
        with open(os.path.join(staging, MANIFEST), "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1)  # last: its presence marks a whole export
        _replace_directory(staging, target)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)
    return manifest


def _replace_directory(staging, target):
    """Rename ``staging`` onto ``target``; an earlier export there is moved aside to a
    temporary name first (a crash between the renames leaves no directory at all)."""
    from onmt_qd.fileio import _fsync_directory, temporary_name

    old = temporary_name(target + ".old")
    if os.path.lexists(target):
        os.rename(target, old)
    os.rename(staging, target)
    _fsync_directory(os.path.dirname(target))
    if os.path.isdir(old):
        shutil.rmtree(old)


def _manifest_digest(manifest):
    """SHA-256 of the manifest's own fields (all but this digest), canonical JSON."""
    fields = {k: v for k, v in manifest.items() if k != MANIFEST_DIGEST}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def read_manifest(model_dir):
    """The manifest of an export directory, checked cheaply: a one-line error for
    anything else (an export killed before its end leaves a temporary directory without
    one), for a manifest edited by hand (its own digest: a quantization or tokenizer it
    does not describe would be believed), and for a file it lists that is missing or
    has another size. verify_files checks the contents."""
    path = os.path.join(model_dir, MANIFEST)
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or not os.path.isfile(os.path.join(model_dir, "model.bin")):
        raise ValueError(f"-model {model_dir} is a directory but not a complete "
                         f"onmt_qd_export directory (no valid {MANIFEST} and model.bin): "
                         "export the model again with onmt_qd_export")
    if not isinstance(manifest.get("files"), dict) or MANIFEST_DIGEST not in manifest:
        raise ValueError(f"-model {model_dir} was exported by an older onmt_qd, whose "
                         f"{MANIFEST} has no checksums: export it again with onmt_qd_export")
    if manifest[MANIFEST_DIGEST] != _manifest_digest(manifest):
        raise ValueError(f"-model {model_dir}: {MANIFEST} was changed after the export (its "
                         "digest does not match), so what it says of the model cannot be "
                         "trusted: export the model again with onmt_qd_export")
    for role in ("source_spm", "target_spm"):
        if manifest[role] not in manifest["files"]:
            raise ValueError(f"-model {model_dir}: {MANIFEST} names {role} "
                             f"{manifest[role]}, which the export did not write: export again")
    for name, expected in manifest["files"].items():
        file = os.path.join(model_dir, name)
        if not os.path.isfile(file):
            raise ValueError(f"-model {model_dir}: {name} is missing from the export "
                             "directory: export the model again with onmt_qd_export")
        if os.path.getsize(file) != expected["bytes"]:
            raise ValueError(f"-model {model_dir}: {name} has {os.path.getsize(file)} bytes, "
                             f"the export wrote {expected['bytes']}: it was changed or "
                             "damaged; export the model again with onmt_qd_export")
    return manifest


def verify_files(model_dir, manifest):
    """Every file the manifest lists has the SHA-256 the export wrote (a flipped byte in
    model.bin would load and translate): once per load of the directory."""
    from onmt_qd.fileio import sha256

    for name, expected in manifest["files"].items():
        if sha256(os.path.join(model_dir, name)) != expected["sha256"]:
            raise ValueError(f"-model {model_dir}: {name} does not match the checksum in "
                             f"{MANIFEST} (changed or damaged since the export): export the "
                             "model again with onmt_qd_export")


def is_export(model_dir):
    """Whether a directory is (or was being written as) an onmt_qd export: it has a
    manifest, or the temporary name of an export killed before its end."""
    from onmt_qd.fileio import TEMPORARY

    return os.path.lexists(os.path.join(model_dir, MANIFEST)) or \
        bool(TEMPORARY.search(os.path.normpath(model_dir)))


def describe_directory(model_dir, source_spm=None, target_spm=None):
    """The manifest of a CTranslate2 directory, checked: an onmt_qd export's own (its
    files' checksums verified), or, for a directory a CTranslate2 converter wrote
    (deploy/foreign.py), one made from what it holds, its tokenizers given or found
    in or beside it. SentencePiece paths are absolute in the result."""
    from onmt_qd.deploy.foreign import inspect_translator

    if is_export(model_dir):
        manifest = read_manifest(model_dir)
        if source_spm or target_spm:
            raise ValueError(f"-model {model_dir} is an onmt_qd_export directory, which "
                             "tokenizes with its own SentencePiece models: leave "
                             "-src_subword_model and -tgt_subword_model out")
        verify_files(model_dir, manifest)
        return {**manifest, "source_spm": os.path.join(model_dir, manifest["source_spm"]),
                "target_spm": os.path.join(model_dir, manifest["target_spm"])}
    found = inspect_translator(model_dir, "-model", source_spm, target_spm)
    return {"format": "ctranslate2", "quantization": found.quantization,
            "n_params": found.n_params, "source_spm": found.source_spm,
            "target_spm": found.target_spm}


class DeployedModel:
    """A CTranslate2 translator and its SentencePiece models, loaded once."""

    def __init__(self, model_dir, device="cpu", device_index=0, inter_threads=None,
                 intra_threads=DEFAULT_INTRA_THREADS, source_spm=None, target_spm=None):
        import ctranslate2
        import sentencepiece

        manifest = describe_directory(model_dir, source_spm, target_spm)
        if device == "cuda" and device_index >= ctranslate2.get_cuda_device_count():
            raise ValueError(f"-gpu {device_index}: CTranslate2 sees "
                             f"{ctranslate2.get_cuda_device_count()} CUDA device(s)")
        if inter_threads is None:  # one translator per core
            inter_threads = 1 if device == "cuda" else max(1, cpu_threads() // intra_threads)
        self.device, self.inter_threads, self.intra_threads = (
            device if device == "cpu" else f"cuda:{device_index}", inter_threads, intra_threads)
        import torch

        torch_threads = torch.get_num_threads()
        self.translator = ctranslate2.Translator(
            model_dir, device=device, device_index=device_index,
            inter_threads=inter_threads, intra_threads=intra_threads)
        # the translator set the OpenMP threads torch shares to intra_threads: an
        # OpenNMT-py model translated later in this process keeps its own
        torch.set_num_threads(torch_threads)
        self.source = sentencepiece.SentencePieceProcessor(model_file=manifest["source_spm"])
        self.target = sentencepiece.SentencePieceProcessor(model_file=manifest["target_spm"])
        self.manifest = manifest

    def translate(self, lines, beam_size=5, batch_size=64, n_best=1, max_length=250,
                  max_length_ratio=1.25, progress=None):
        """(scores, predictions): ``n_best`` of each per line, in order; a blank line
        gets empty predictions (score 0), as OpenNMT-py's path gives them. Lines are
        sorted by length into batches, all queued at once (each free translator takes
        the next); a batch stops at OpenNMT-py's length limit, min(max_length, longest
        source x max_length_ratio + 5) tokens (max_length alone for a ratio of 0).
        ``progress`` (onmt_qd.progress.Progress) counts each batch as it
        finishes."""
        keep = [i for i, line in enumerate(lines) if line.strip()]
        tokens = [self.source.encode(lines[i], out_type=str) for i in keep]
        order = sorted(range(len(tokens)), key=lambda j: len(tokens[j]))
        batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
        jobs = [self.translator.translate_batch(
            [tokens[j] for j in batch], asynchronous=True, beam_size=beam_size,
            num_hypotheses=n_best, max_decoding_length=_length_limit(
                [tokens[j] for j in batch], max_length, max_length_ratio),
            min_decoding_length=0, max_input_length=0,  # as OpenNMT-py: may be empty, no cut
            return_scores=True) for batch in batches]
        scores, predictions = [[0.0] * n_best for _ in lines], [[""] * n_best for _ in lines]
        for batch, job in zip(batches, jobs):
            for j, result in zip(batch, job):
                result = result.result()
                scores[keep[j]] = [float(s) for s in result.scores]
                predictions[keep[j]] = [self.target.decode(h) for h in result.hypotheses]
            if progress is not None:
                progress.advance(len(batch))
        return scores, predictions

    def perplexity(self, sources, references, batch_size=64):
        """exp(mean negative log-probability of the reference tokens, end of sentence
        included), as CTranslate2 scores them; pairs with a blank side are left out."""
        pairs = [(s, r) for s, r in zip(sources, references) if s.strip() and r.strip()]
        results = self.translator.score_batch(
            [self.source.encode(s, out_type=str) for s, _ in pairs],
            [self.target.encode(r, out_type=str) for _, r in pairs], max_batch_size=batch_size)
        log_probs = [p for result in results for p in result.log_probs]
        return math.exp(-sum(log_probs) / max(len(log_probs), 1))


def _length_limit(batch, max_length, ratio):
    """OpenNMT-py's decoding length limit for a batch (onmt/translate/translator.py)."""
    if ratio <= 0:
        return max_length
    return int(min(max_length, max(len(t) for t in batch) * ratio + 5))

