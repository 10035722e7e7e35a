"""Build OpenNMT-py models from checkpoint dictionaries, and turn models back into
checkpoint dictionaries, with OpenNMT-py's own builder and key layout."""
import torch
from onmt.inputters.inputter import dict_to_vocabs
from onmt.model_builder import build_base_model
from onmt.utils.parse import ArgumentParser

from onmt_qd.compat import load_checkpoint, use_contiguous_rnn_decoders

# Every model built here may decode with beam search on cuDNN (see compat).
use_contiguous_rnn_decoders()


def model_opts_of(checkpoint):
    model_opt = ArgumentParser.ckpt_model_opts(checkpoint["opt"])
    ArgumentParser.update_model_opts(model_opt)
    ArgumentParser.validate_model_opts(model_opt)
    model_opt.update_vocab = False
    return model_opt


def build_model_from_checkpoint(checkpoint, device="cpu", overrides=None):
    """(model, vocabs, model_opt) in eval mode; ``checkpoint`` may be a path;
    ``overrides`` (option -> value) replace model options before the model is built."""
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
    model.load_state_dict(state, device=torch.device(device), strict=True)
    model.to(device)
    model.eval()
    return model, vocabs, model_opt


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
