"""Transformer teachers and students through every command (issue 21), and LSTM and
Transformer in either role. The shared teacher is written by stock ``onmt_train`` (no
onmt_qd keys), so every test that uses it also checks that a user's own checkpoint
is accepted. Models are tiny (2 layers, hidden 32, 2 heads) and train a handful of
steps without validation; commands run in this process through their main() (a
subprocess would spend ~3 s importing OpenNMT-py for each)."""
import json
import os
import sys

import pytest
import torch
from onmt.bin import train as onmt_train
from onmt.inputters.inputter import dict_to_vocabs

from onmt_qd.codec.sizereport import tensor_group
from onmt_qd.compat import load_checkpoint
from onmt_qd.distill import load_teacher
from onmt_qd.models import meta_model, named_weights
from onmt_qd.quant_checkpoint import QUANT_KEY, SHADOW_KEY, levels_per_bucket, quantization_of
from test_bad_input import command, refused

TRANSFORMER = ["-encoder_type", "transformer", "-decoder_type", "transformer", "-layers", 2,
               "-hidden_size", 32, "-word_vec_size", 32, "-heads", 2, "-transformer_ff", 64,
               "-position_encoding", "-optim", "adam", "-learning_rate", 0.002]
EMBEDDINGS = "{}.embeddings.make_embedding.emb_luts.0.weight"
DECODING = ["-beam_size", 2, "-max_length", 20]
STEPS = 2


def steps(n):
    """``n`` steps of 8 sentences, no validation."""
    return ["-train_steps", n, "-valid_steps", 1000, "-save_checkpoint_steps", n,
            "-batch_size", 8]


def run(module, *args):
    """onmt_qd_MODULE with ``args``, run in this process; it must succeed."""
    code, _, err = command(module, *args)
    assert code == 0, f"onmt_qd_{module} failed:\n{err[-3000:]}"


@pytest.fixture(scope="module")
def stock_teacher(data, tmp_path_factory):
    """A Transformer trained by stock OpenNMT-py's onmt_train: a user's own model, with
    its embeddings and output layer tied as OpenNMT-py's Transformer recipes do."""
    save = tmp_path_factory.mktemp("stock") / "model"
    argv = sys.argv
    sys.argv = ["onmt_train", *map(str, ["-config", data["config"], "-save_model", save,
                                         *TRANSFORMER, *steps(STEPS), "-share_embeddings",
                                         "-share_decoder_embeddings"])]
    try:
        onmt_train.main()
    finally:
        sys.argv = argv
    path = f"{save}_step_{STEPS}.pt"
    assert not [key for key in load_checkpoint(path) if key.startswith("qd_")]
    return path


@pytest.fixture(scope="module")
def quantized_student(stock_teacher, data, tmp_path_factory):
    """A 4-bit Transformer student distilled from the stock teacher's cache."""
    root = tmp_path_factory.mktemp("student")
    run("teacher_cache", "-config", data["config"], "-teacher_model", stock_teacher,
        "-output", root / "cache")
    run("train", "-config", data["config"], "-save_model", root / "model", *TRANSFORMER,
        *steps(STEPS), "-teacher_cache", root / "cache", "-quant_bits", 4)
    return root / f"model_step_{STEPS}.pt"


def parameter_names(checkpoint):
    return {name for name, _ in meta_model(checkpoint).named_parameters()}


def test_transformer_student_quantized_distillation_to_qdz_translation_and_eval(
        quantized_student, data, tmp_path):
    checkpoint = load_checkpoint(quantized_student)
    policy, quantized = quantization_of(checkpoint)
    # the stated policy: every matrix (attention, feed-forward, embeddings, generator)
    # at 4 bits, bucket 256; layer norms, biases and the positional encoding buffer fp
    matrices = {name for name in parameter_names(checkpoint)
                if checkpoint["model"].get(name, checkpoint["generator"].get(
                    name.removeprefix("generator."))).dim() >= 2}
    assert set(quantized) == matrices
    assert not any("layer_norm" in name or name.endswith("pe.pe") for name in quantized)
    assert "encoder.embeddings.make_embedding.pe.pe" in checkpoint["model"]
    for name, qt in quantized.items():
        assert qt.bits == 4 and qt.bucket_size == 256 and levels_per_bucket(qt) <= 16, name
        assert torch.equal(qt.dequantize(), checkpoint["model"].get(
            name, checkpoint["generator"].get(name.removeprefix("generator.")))), name

    qdz = tmp_path / "student.qdz"
    run("compress", "-model", quantized_student, "-output", qdz,
        "-report_json", tmp_path / "size.json")
    with open(tmp_path / "size.json") as handle:
        report = json.load(handle)
    assert report["bytes_on_disk"] == os.path.getsize(qdz)
    groups = report["groups"]
    assert {g for g in groups if groups[g]["quantized_params"]} == {
        "generator", "embeddings", "attention", "feed-forward"}
    assert groups["layer norms"]["quantized_params"] == 0 < groups["layer norms"]["plain_bytes"]
    # the positional encoding is built by the reader, not stored: only parameters count
    stored = {row["name"] for row in report["quantized"] + report["plain"]}
    assert not any(name.endswith("pe.pe") for name in stored)
    assert report["n_params"] == sum(p.numel() for p in meta_model(checkpoint).parameters())

    results = {}
    for model in (quantized_student, qdz):
        name = os.path.basename(model)
        run("eval", "-model", model, "-src", data["test.de"], "-tgt", data["test.en"],
            "-json", tmp_path / f"{name}.json", "-output", tmp_path / f"{name}.txt",
            "-beam_size", 2)
        with open(tmp_path / f"{name}.json") as handle:
            results[model] = json.load(handle)
        results[model]["hyp"] = (tmp_path / f"{name}.txt").read_text()
    pt, compressed = results[quantized_student], results[qdz]
    assert pt["hyp"] == compressed["hyp"] and len(pt["hyp"].splitlines()) == 20
    assert pt["bleu"] == compressed["bleu"] and pt["n_params"] == compressed["n_params"]
    assert compressed["n_params"] == report["n_params"]
    assert compressed["size_bytes"] == os.path.getsize(qdz)


def test_stock_transformer_pm_and_differentiable_quantization_compress_and_translate(
        stock_teacher, data, tmp_path):
    run("quantize", "-model", stock_teacher, "-bits", 2, "-output", tmp_path / "pm.pt")
    run("diffquant", "-config", data["config"], "-model", stock_teacher,
        "-teacher_model", stock_teacher, "-bits", 2, "-output", tmp_path / "dq.pt",
        "-train_steps", 1, "-valid_steps", 1, "-grad_norm_batches", 1, "-batch_size", 8)
    names = None
    for variant in ("pm", "dq"):
        checkpoint = load_checkpoint(tmp_path / f"{variant}.pt")
        policy, quantized = quantization_of(checkpoint)
        assert names is None or set(quantized) == names  # one policy, one selection
        names = set(quantized)
        assert not any(name.endswith("pe.pe") or "layer_norm" in name for name in quantized)
        # a tied tensor is quantized under each of its names, to the same values
        weights = named_weights(checkpoint)
        for name in (EMBEDDINGS.format("decoder"), "generator.weight"):
            assert {name, EMBEDDINGS.format("encoder")} <= set(quantized)
            assert torch.equal(weights[name], weights[EMBEDDINGS.format("encoder")])
        # differentiable quantization redistributes a 2-bit budget among the tensors
        assert all(levels_per_bucket(qt) <= 2 ** qt.bits for qt in quantized.values())
        assert variant == "dq" or {qt.bits for qt in quantized.values()} == {2}
        run("compress", "-model", tmp_path / f"{variant}.pt", "-output",
            tmp_path / f"{variant}.qdz")
    out = tmp_path / "pm.txt"
    run("translate", "-model", tmp_path / "pm.qdz", "-src", data["test.de"], "-output",
        out, *DECODING)
    assert len(out.read_text().splitlines()) == 20


def trained_weights(data, save, *args):
    """The weights after one training step (enough for a teacher to show)."""
    run("train", "-config", data["config"], "-save_model", save, *steps(1), *args)
    checkpoint = load_checkpoint(f"{save}_step_1.pt")
    return {**checkpoint["model"], **checkpoint["generator"]}


def differ(a, b):
    assert a.keys() == b.keys()
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_mixed_pairs_distill(stock_teacher, data, tmp_path):
    """Transformer teacher -> LSTM student, then that LSTM as the teacher of a
    Transformer student: in each pair the teacher changes the student (against
    distillation weight 0; that weight 0 trains as no teacher: test_train.py)."""
    teacher = stock_teacher
    for family, student in (("lstm", []), ("transformer", TRANSFORMER)):
        muted = trained_weights(data, tmp_path / f"{family}_muted", *student,
                                "-teacher_model", teacher, "-distill_weight", 0)
        distilled = trained_weights(data, tmp_path / family, *student,
                                    "-teacher_model", teacher)
        assert differ(muted, distilled), family
        teacher = tmp_path / f"{family}_step_1.pt"


def test_resumed_transformer_keeps_quantization_and_shape(quantized_student, data, tmp_path):
    save = tmp_path / "resumed"
    run("train", "-config", data["config"], "-save_model", save, *TRANSFORMER,
        *steps(STEPS + 1), "-train_from", quantized_student)
    before = load_checkpoint(quantized_student)
    after = load_checkpoint(f"{save}_step_{STEPS + 1}.pt")
    assert after[QUANT_KEY]["policy"] == before[QUANT_KEY]["policy"]
    assert after[SHADOW_KEY].keys() == before[SHADOW_KEY].keys()
    _, quantized = quantization_of(after)
    assert quantized and all(levels_per_bucket(qt) <= 16 for qt in quantized.values())
    # without -position_encoding, which OpenNMT-py refuses beside relative positions
    common = ["-config", data["config"], "-save_model", tmp_path / "refused",
              *[a for a in TRANSFORMER if a != "-position_encoding"], *steps(STEPS + 1),
              "-train_from", quantized_student]
    for option, value, trained in (("heads", 4, 2), ("transformer_ff", 128, 64),
                                   ("max_relative_positions", 8, 0)):
        refused("train", *common, f"-{option}", value,
                message=f"has -{option} {trained}, and this run sets -{option} {value}: "
                "a resumed model keeps its shape")


def test_live_transformer_teacher_runs_without_dropout(stock_teacher, data):
    """Eval mode is not enough: on a GPU, OpenNMT-py's fused attention applies
    -attention_dropout (0.1 by default) in eval mode too."""
    vocabs = dict_to_vocabs(load_checkpoint(stock_teacher)["vocab"])
    teacher = load_teacher(stock_teacher, vocabs, "cpu")
    rates = [m.dropout_p for m in teacher.modules() if hasattr(m, "dropout_p")]
    assert rates and not any(rates) and not teacher.training


def test_size_report_groups_name_both_families():
    assert {name: tensor_group(name) for name in (
        "encoder.rnn.weight_ih_l0", "decoder.rnn.layers.0.weight_hh", "decoder.attn.linear_in.weight",
        "encoder.embeddings.make_embedding.emb_luts.0.weight", "generator.weight",
        "encoder.transformer.0.self_attn.linear_keys.weight",
        "decoder.transformer_layers.1.feed_forward.w_1.weight",
        "decoder.transformer_layers.1.feed_forward.layer_norm.weight",
        "encoder.layer_norm.bias", "encoder.bridge.0.weight")} == {
        "encoder.rnn.weight_ih_l0": "recurrent", "decoder.rnn.layers.0.weight_hh": "recurrent",
        "decoder.attn.linear_in.weight": "attention",
        "encoder.embeddings.make_embedding.emb_luts.0.weight": "embeddings",
        "generator.weight": "generator",
        "encoder.transformer.0.self_attn.linear_keys.weight": "attention",
        "decoder.transformer_layers.1.feed_forward.w_1.weight": "feed-forward",
        "decoder.transformer_layers.1.feed_forward.layer_norm.weight": "layer norms",
        "encoder.layer_norm.bias": "layer norms", "encoder.bridge.0.weight": "recurrent"}
