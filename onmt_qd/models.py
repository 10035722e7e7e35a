"""Build OpenNMT-py models from checkpoint dictionaries, and turn models back into
checkpoint dictionaries, with OpenNMT-py's own builder and key layout."""
import torch
from onmt.inputters.inputter import dict_to_vocabs
from onmt.model_builder import build_base_model
from onmt.utils.parse import ArgumentParser

from onmt_qd.compat import keep_decoder_state_contiguous, load_checkpoint, prepare_onmt


SUBWORD_OPTIONS = ("src_subword_model", "tgt_subword_model")


def sentencepiece_models(opt):
    """(source, target) SentencePiece model files a checkpoint's options name, or None
    when it was not trained with the sentencepiece transform."""
    transforms = set(getattr(opt, "transforms", None) or [])
    for split in (getattr(opt, "data", None) or {}).values():
        transforms.update((split or {}).get("transforms") or [])
    models = tuple(getattr(opt, name, None) for name in SUBWORD_OPTIONS)
    return models if "sentencepiece" in transforms and all(models) else None


def resolve_subword_models(model_opt, model_path, opt=None):
    """Make the SentencePiece models a checkpoint's options name absolute: the
    -src_subword_model / -tgt_subword_model of ``opt`` when given, else the stored path
    as it stands (absolute, or relative to the working folder, as onmt_train wrote it),
    else the stored path relative to the checkpoint's folder (a stock checkpoint moved
    with its model beside it); a missing one is a one-line error naming both options."""
    import os

    if sentencepiece_models(model_opt) is None:
        return
    for name in SUBWORD_OPTIONS:
        given, stored = getattr(opt, name, None), getattr(model_opt, name)
        candidates = [given] if given else [stored, os.path.join(
            os.path.dirname(os.path.abspath(model_path)), stored)]
        found = next((c for c in candidates if os.path.isfile(c)), None)
        if found is None:
            where = f"-{name} {given}" if given else \
                f"its {name} {stored} (looked for in the working folder and beside the model)"
            raise ValueError(f"-model {model_path}: SentencePiece model not found: {where}; "
                             "give the model's files with -src_subword_model and "
                             "-tgt_subword_model")
        setattr(model_opt, name, os.path.abspath(found))


def model_opts_of(checkpoint):
    model_opt = ArgumentParser.ckpt_model_opts(checkpoint["opt"])
    ArgumentParser.update_model_opts(model_opt)
    ArgumentParser.validate_model_opts(model_opt)
    model_opt.update_vocab = False
    return model_opt


def build_model_from_checkpoint(checkpoint, device="cpu", overrides=None):
    """(model, vocabs, model_opt) in eval mode, dropout off; ``checkpoint`` may be a path;
    ``overrides`` (option -> value) replace model options before the model is built."""
    prepare_onmt()  # a checkpoint dictionary may come from elsewhere than load_checkpoint
    if isinstance(checkpoint, str):
        checkpoint = load_checkpoint(checkpoint)
    model_opt = model_opts_of(checkpoint)
    vars(model_opt).update(overrides or {})
    vocabs = dict_to_vocabs(checkpoint["vocab"])
    model = build_base_model(model_opt, vocabs)
    # OpenNMT-py's loader consumes the dictionaries it is given and makes the generator
    # share storage with the checkpoint's tensors: hand it copies, so writing into the
    # model (differentiable quantization does) never changes the checkpoint.
    state = {"model": {k: v.clone() for k, v in checkpoint["model"].items()},
             "generator": {k: v.clone() for k, v in (checkpoint["generator"] or {}).items()}}
    try:
        model.load_state_dict(state, device=torch.device(device), strict=True)
    except (ValueError, AssertionError, KeyError, RuntimeError) as exc:
        # OpenNMT-py's loader says "Missing key", or asserts on a shape, with no word of
        # what that means for the file
        raise ValueError(_misfit(model, checkpoint, exc)) from None
    keep_decoder_state_contiguous(model)  # it may decode with beam search on cuDNN
    model.to(device)
    model.eval()
    # eval mode alone leaves attention dropout on: scaled dot product attention (on a
    # GPU) applies -attention_dropout whatever the mode, so set it to 0 as OpenNMT-py's
    # load_test_model does
    for module in model.modules():
        if hasattr(module, "dropout_p"):
            module.dropout_p = 0.0
    return model, vocabs, model_opt


def _misfit(model, checkpoint, error):
    """What is wrong when a checkpoint's weights do not load into the model its own
    options build: the first missing, extra or misshapen weight (OpenNMT-py's loader
    consumed the dictionaries it was given: the checkpoint's own are read)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in named_weights(checkpoint).items()}
    missing = sorted(set(expected) - set(given))
    extra = sorted(set(given) - set(expected))
    shapes = sorted(k for k in given if k in expected and given[k] != expected[k])
    what = (f"weight {missing[0]} is missing" if missing else
            f"it has weight {extra[0]}, which the model has not" if extra else
            f"weight {shapes[0]} has shape {list(given[shapes[0]])}, the model's is "
            f"{list(expected[shapes[0]])}" if shapes else
            str(error).splitlines()[0] if str(error) else type(error).__name__)
    return (f"the checkpoint's weights do not fit the model its own options describe "
            f"({what}): the file was edited or damaged; use it as training wrote it")


def meta_model(checkpoint):
    """The model a checkpoint's options and vocabulary describe, on torch's meta device:
    its names and shapes, without memory or weights."""
    with torch.device("meta"):
        return build_base_model(model_opts_of(checkpoint), dict_to_vocabs(checkpoint["vocab"]))


def parameter_shapes(model):
    """name -> shape of a model's parameters under every name its state dict gives them
    (a tied embedding under both), generator as 'generator.*': the tensors a
    quantization policy chooses from. Buffers (a Transformer's positional encoding
    ``pe``) are not weights: they are never quantized (docs/method.md §3)."""
    return {name: tuple(t.shape) for name, t in model.state_dict(keep_vars=True).items()
            if isinstance(t, torch.nn.Parameter)}


def tied_names(model):
    """alias -> name of the parameters a model holds under two names (a tied embedding:
    ``named_parameters`` gives it once, the state dict under each name)."""
    first = {id(p): name for name, p in model.named_parameters()}
    return {name: first[id(t)] for name, t in model.state_dict(keep_vars=True).items()
            if isinstance(t, torch.nn.Parameter) and first[id(t)] != name}


def built_buffers(checkpoint, names=None):
    """name -> value of the persistent buffers that building the checkpoint's model
    computes (a Transformer's sinusoidal positional encoding ``pe``), or of ``names``."""
    with torch.random.fork_rng(devices=[]):  # building draws initial weights
        model = build_base_model(model_opts_of(checkpoint), dict_to_vocabs(checkpoint["vocab"]))
    parameters = parameter_shapes(model)
    buffers = {name: t for name, t in model.state_dict().items() if name not in parameters}
    if names is not None:
        missing = sorted(set(names) - set(buffers))
        if missing:
            raise ValueError(f"its model has no buffer '{missing[0]}' to build")
        buffers = {name: buffers[name] for name in names}
    return buffers


def rebuilt_buffers(checkpoint):
    """The buffers of ``checkpoint`` that building its model gives again bit for bit: a
    compressed file leaves them out and its reader builds them. A buffer whose value
    the checkpoint changed is not one of them (it is stored)."""
    weights = named_weights(checkpoint)
    return {name: buffer for name, buffer in built_buffers(checkpoint).items()
            if name in weights and torch.equal(buffer, weights[name])}


def named_weights(checkpoint):
    """Every tensor of a checkpoint under its parameter name (generator as 'generator.*')."""
    weights = dict(checkpoint["model"])
    weights.update({f"generator.{k}": v for k, v in (checkpoint["generator"] or {}).items()})
    return weights


def split_weights(weights):
    """Inverse of named_weights: (model state dict, generator state dict)."""
    model = {k: v for k, v in weights.items() if not k.startswith("generator.")}
    generator = {k[len("generator."):]: v for k, v in weights.items() if k.startswith("generator.")}
    return model, generator


def model_weights(model):
    """Parameter-named CPU tensors of a live model, in the layout of named_weights."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def average_checkpoints(paths: list[str]) -> dict:
    """One checkpoint whose weights are the mean of ``paths``' (the last epochs of one
    run: a teacher that translates better for no more training, docs/results.md); its
    options and vocabulary are the last one's, and it has no optimizer state."""
    checkpoints = [load_checkpoint(path) for path in paths]
    averaged = {k: v for k, v in checkpoints[-1].items() if k != "optim"}
    for part in ("model", "generator"):
        averaged[part] = {name: (sum(c[part][name].double() for c in checkpoints) /
                                 len(checkpoints)).to(tensor.dtype)
                          if tensor.is_floating_point() else tensor
                          for name, tensor in checkpoints[-1][part].items()}
    return averaged

