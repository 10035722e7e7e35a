"""Beam search with deep RNN decoders: OpenNMT-py leaves the reordered decoder state
non-contiguous, which cuDNN refuses; onmt_qd's decoders keep it contiguous. On the
CPU the translations must stay exactly those of stock OpenNMT-py; on a GPU (tests
skipped without CUDA) they must match the CPU's, from a checkpoint and a .qdz file."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import run_cli

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def train_two_layer(data, save, encoder_type, input_feed):
    """Two decoder layers: the case the stock state handling breaks on cuDNN."""
    run_cli("train", "-config", data["config"], "-save_model", save, "-train_steps", 40,
            "-valid_steps", 40, "-save_checkpoint_steps", 40, "-layers", 2,
            "-encoder_type", encoder_type, "-input_feed", input_feed)
    return f"{save}_step_40.pt"


@pytest.fixture(scope="module")
def deep_brnn(data, tmp_path_factory):
    return train_two_layer(data, tmp_path_factory.mktemp("deep") / "brnn", "brnn", 1)


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read().splitlines()


def translation_args(model, src, output, spm, beam_size=5, batch_size=7, gpu=-1):
    # -min_length: a briefly trained model may stop at once; make every beam search run
    return ["-model", model, "-src", src, "-output", output, "-beam_size", beam_size,
            "-batch_size", batch_size, "-gpu", gpu, "-min_length", 4, "-transforms", "sentencepiece",
            "-src_subword_model", spm, "-tgt_subword_model", spm]


def test_reordered_state_is_contiguous_and_unchanged(deep_brnn):
    from onmt.decoders import str2dec
    from onmt.decoders.decoder import InputFeedRNNDecoder, RNNDecoderBase, StdRNNDecoder

    from onmt_qd.models import build_model_from_checkpoint

    model, _, _ = build_model_from_checkpoint(deep_brnn)
    decoder = model.decoder
    src = torch.randint(4, 50, (3, 6, 1))
    lengths = torch.tensor([6, 5, 4])
    enc_out, enc_final, lengths = model.encoder(src, lengths)
    decoder.init_state(src, enc_out, enc_final)
    tile = lambda state, dim: state.repeat_interleave(5, dim=dim)  # noqa: E731 (beam tiling)
    stock = dict(decoder.state)
    RNNDecoderBase.map_state(decoder, tile)  # what stock OpenNMT-py leaves
    expected = decoder.state
    decoder.state = stock
    decoder.map_state(tile)
    assert any(not h.is_contiguous() for h in expected["hidden"])
    for ours, theirs in zip(decoder.state["hidden"], expected["hidden"]):
        assert ours.is_contiguous() and torch.equal(ours, theirs)
    assert decoder.state["input_feed"].is_contiguous()
    # only the model built here changed: OpenNMT-py's registry builds its own classes
    assert (str2dec["rnn"], str2dec["ifrnn"]) == (StdRNNDecoder, InputFeedRNNDecoder)


def test_cpu_translations_equal_stock_onmt_translate(deep_brnn, data, tmp_path):
    """Stock onmt_translate in a fresh process (no onmt_qd import; the checkpoint is our
    own, so its trusted-file switch is safe here) against onmt_qd_translate."""
    args = [str(a) for a in translation_args(deep_brnn, data["test.de"], tmp_path / "stock.txt",
                                             data["spm"])]
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    subprocess.run([sys.executable, "-m", "onmt.bin.translate", *args], check=True,
                   capture_output=True, env=env)
    run_cli("translate", *translation_args(deep_brnn, data["test.de"], tmp_path / "ours.txt",
                                           data["spm"]))
    stock = read(tmp_path / "stock.txt")
    assert len(stock) == 20 and any(stock)
    assert read(tmp_path / "ours.txt") == stock


@cuda
@pytest.mark.parametrize("encoder_type,input_feed", [("brnn", 1), ("rnn", 0)])
def test_gpu_translation_from_checkpoint_and_qdz_matches_cpu(data, tmp_path, encoder_type,
                                                              input_feed):
    from onmt_qd.evaluate.metrics import bleu_chrf

    model = train_two_layer(data, tmp_path / "model", encoder_type, input_feed)
    run_cli("quantize", "-model", model, "-bits", 4, "-output", tmp_path / "q4.pt")
    run_cli("compress", "-model", tmp_path / "q4.pt", "-output", tmp_path / "q4.qdz")
    for path in (model, tmp_path / "q4.qdz"):
        run_cli("translate", *translation_args(path, data["test.de"], tmp_path / "cpu.txt",
                                               data["spm"], batch_size=64))
        cpu = read(tmp_path / "cpu.txt")
        for beam_size, batch_size in ((5, 64), (5, 1), (1, 64)):
            run_cli("translate", *translation_args(path, data["test.de"], tmp_path / "gpu.txt",
                                                   data["spm"], beam_size, batch_size, gpu=0))
            gpu = read(tmp_path / "gpu.txt")
            assert len(gpu) == len(cpu)
            if beam_size == 5 and gpu != cpu:  # cuDNN's arithmetic may differ slightly
                assert abs(bleu_chrf(gpu, data_refs(data))[0]
                           - bleu_chrf(cpu, data_refs(data))[0]) <= 0.1
        result = run_cli("eval", "-model", path, "-src", data["test.de"], "-tgt",
                         data["test.en"], "-gpu", 0)
        assert "BLEU" in result.stdout


def data_refs(data):
    return read(data["test.en"])
