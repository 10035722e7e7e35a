"""QuantPolicy selection and serialization, and bit allocation (docs/method.md §3, §4)."""
import json

import pytest
import torch

from onmt_qd.quant import QuantPolicy, allocate_bits, allocate_points, uniform_points

# A 1-layer LSTM NMT model as OpenNMT-py names its parameters.
SHAPES = {
    "encoder.embeddings.make_embedding.emb_luts.0.weight": (1000, 64),
    "encoder.rnn.weight_ih_l0": (512, 64),
    "encoder.rnn.weight_hh_l0": (512, 128),
    "encoder.rnn.bias_ih_l0": (512,),
    "encoder.rnn.bias_hh_l0": (512,),
    "decoder.embeddings.make_embedding.emb_luts.0.weight": (1200, 64),
    "decoder.rnn.layers.0.weight_ih": (512, 192),
    "decoder.rnn.layers.0.weight_hh": (512, 128),
    "decoder.rnn.layers.0.bias_ih": (512,),
    "decoder.attn.linear_in.weight": (128, 128),
    "decoder.attn.linear_out.weight": (128, 256),
    "generator.weight": (1200, 128),
    "generator.bias": (1200,),
}
MATRICES = [name for name, shape in SHAPES.items() if len(shape) == 2]
BIASES = [name for name, shape in SHAPES.items() if len(shape) == 1]


def test_default_selects_every_matrix_in_order():
    selected = QuantPolicy().select(SHAPES)
    assert list(selected) == MATRICES
    assert set(selected.values()) == {4}


def test_switches():
    no_emb = QuantPolicy(embeddings=False).select(SHAPES)
    assert not any("embeddings" in name for name in no_emb) and "generator.weight" in no_emb
    no_gen = QuantPolicy(generator=False, biases=True).select(SHAPES)
    assert "generator.weight" not in no_gen and "generator.bias" not in no_gen
    with_biases = QuantPolicy(biases=True, bits=2).select(torch_sizes(SHAPES))
    assert list(with_biases) == list(SHAPES) and set(with_biases.values()) == {2}


def torch_sizes(shapes):
    return {name: torch.Size(shape) for name, shape in shapes.items()}


def test_include_forces_and_exclude_wins():
    policy = QuantPolicy(embeddings=False, include=[r"decoder\.embeddings", "bias_ih"],
                         exclude=[r"attn\.", r"decoder\.rnn\.layers\.0\.bias_ih"])
    selected = policy.select(SHAPES)
    assert "decoder.embeddings.make_embedding.emb_luts.0.weight" in selected
    assert "encoder.embeddings.make_embedding.emb_luts.0.weight" not in selected
    assert "encoder.rnn.bias_ih_l0" in selected
    assert "decoder.rnn.layers.0.bias_ih" not in selected
    assert not any("attn" in name for name in selected)


@pytest.mark.parametrize("field", ["include", "exclude", "bits_overrides"])
def test_unmatched_pattern_is_an_error(field):
    value = {"fooo": 2} if field == "bits_overrides" else ["fooo"]
    with pytest.raises(ValueError, match="policy pattern 'fooo' matches no .*parameter; "
                                         "parameters look like 'encoder.embeddings"):
        QuantPolicy(**{field: value}).select(SHAPES)


def test_override_of_unquantized_parameter_is_an_error():
    with pytest.raises(ValueError, match="'generator.bias' matches no quantized parameter"):
        QuantPolicy(bits_overrides={"generator.bias": 8}).select(SHAPES)


def test_mixed_precision_last_matching_override_wins():
    policy = QuantPolicy(bits=2, bits_overrides={"coder": 4, "embeddings": 8})
    selected = policy.select(SHAPES)
    assert selected["generator.weight"] == 2
    assert selected["encoder.rnn.weight_ih_l0"] == 4
    assert selected["decoder.embeddings.make_embedding.emb_luts.0.weight"] == 8
    tensor = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    qt = policy.quantize("encoder.embeddings.make_embedding.emb_luts.0.weight", tensor)
    assert qt.bits == 8 and qt.points.numel() == 256


@pytest.mark.parametrize("kwargs, message", [
    ({"bits": 9}, "bits must be an integer from 1 to 8, got 9"),
    ({"bucket_size": 0}, "bucket size must be an integer from 1 to 1048576, got 0"),
    ({"method": "kmeans"}, "quantization method must be one of uniform, quantile"),
    ({"rounding": "up"}, "rounding must be one of deterministic, stochastic"),
    ({"method": "quantile", "rounding": "stochastic"}, "stochastic rounding needs"),
    ({"bits_overrides": {"generator": 0}}, "bits must be an integer from 1 to 8, got 0"),
    ({"include": ["("]}, "invalid policy pattern '\\('"),
])
def test_bad_policy_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantPolicy(**kwargs)


def test_to_dict_round_trip_through_json():
    policy = QuantPolicy(bits=2, bucket_size=128, method="quantile", embeddings=False,
                         biases=True, include=["attn"], exclude=["generator"],
                         bits_overrides={"rnn": 4})
    as_dict = json.loads(json.dumps(policy.to_dict()))
    restored = QuantPolicy.from_dict(as_dict)
    assert restored == policy and restored.to_dict() == policy.to_dict()
    assert QuantPolicy.from_dict(QuantPolicy().to_dict()) == QuantPolicy()


def test_quantize_applies_method_and_rounding():
    tensor = torch.randn(40, 40, generator=torch.Generator().manual_seed(1)) ** 3
    uniform = QuantPolicy(bits=3).quantize("w", tensor)
    assert torch.equal(uniform.points, uniform_points(3))
    quantile = QuantPolicy(bits=3, method="quantile").quantize("w", tensor)
    assert not torch.equal(quantile.points, uniform_points(3))
    assert quantile.points[0] == 0 and quantile.points[-1] == 1
    given = QuantPolicy().quantize("w", tensor, points=torch.tensor([0.0, 0.5, 1.0]))
    assert given.bits == 4 and given.points.tolist() == [0.0, 0.5, 1.0]
    stochastic = QuantPolicy(rounding="stochastic")
    draws = [stochastic.quantize("w", tensor, generator=torch.Generator().manual_seed(seed))
             for seed in (2, 3)]
    assert not torch.equal(draws[0].levels, draws[1].levels)
    deterministic = stochastic.quantize("w", tensor, stochastic=False)
    assert torch.equal(deterministic.levels, QuantPolicy().quantize("w", tensor).levels)
    with pytest.raises(ValueError, match="stochastic rounding needs the uniform method"):
        QuantPolicy(method="quantile").quantize("w", tensor, stochastic=True)


# -- allocation ----------------------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_allocate_points_conserves_total_and_follows_norms(bits):
    norms = [0.0, 0.1, 3.0, 0.7, 0.7, 12.0]
    points = allocate_points([100] * 6, norms, bits)
    assert sum(points) == 6 * 2 ** bits
    assert min(points) >= max(2, 2 ** bits // 2) and max(points) <= 256
    ranked = [p for _, p in sorted(zip(norms, points))]
    assert ranked == sorted(ranked)
    if bits in (2, 4):
        assert points[5] > points[2] > points[1]


def test_allocate_points_rule_of_2017():
    assert allocate_points([10, 20, 30], [1.0, 2.0, 3.0], 4) == [12, 16, 20]
    assert allocate_points([10, 20], [0.0, 0.0], 2) == [4, 4]
    assert allocate_points([10, 20, 30], [1.0, 1.0, 0.0], 2) == [5, 5, 2]


def test_allocate_points_caps_at_256_and_redistributes():
    points = allocate_points([1] * 4, [0.0, 1.0, 2.0, 100.0], 7)
    assert points[3] == 256 and sum(points) == 4 * 128 and points[:3] == [64, 85, 107]


SIZES = [5000, 20000, 20000, 800, 64000, 1000]
NORMS = [0.5, 2.0, 1.0, 0.3, 4.0, 0.0]


@pytest.mark.parametrize("avg_bits", [1.0, 1.5, 2.0, 3.3, 4.0, 8.0, 9.0])
def test_allocate_bits_within_budget(avg_bits):
    bits = allocate_bits(SIZES, NORMS, avg_bits)
    spent = sum(size * b for size, b in zip(SIZES, bits))
    assert spent <= avg_bits * sum(SIZES)
    assert all(1 <= b <= 8 for b in bits)
    # Greedy filling: no single further bit would still fit.
    left = avg_bits * sum(SIZES) - spent
    assert all(b == 8 or size > left for size, b in zip(SIZES, bits))


def test_allocate_bits_favours_larger_norm():
    bits = allocate_bits([1000] * 4, [0.1, 5.0, 1.0, 0.0], 3.0)
    assert sum(bits) == 12 and bits[1] >= bits[2] >= bits[0] >= bits[3]
    assert bits[1] > bits[0]
    assert allocate_bits([1000, 1000], [1.0, 1.0], 4.0) == [4, 4]


def test_allocate_bits_respects_min_and_max():
    bits = allocate_bits([100, 100], [1.0, 0.0], 5.0, min_bits=2, max_bits=6)
    assert bits == [6, 4]


@pytest.mark.parametrize("args, message", [
    (([100, 100], [1.0, 1.0], 0.9), "less than the 1-bit minimum"),
    (([100, 100], [1.0, 1.0], 1.5, 2), "less than the 2-bit minimum"),
    (([100], [1.0, 1.0], 2.0), "1 tensor sizes but 2 gradient norms"),
    (([100, 100], [1.0, -1.0], 2.0), "gradient norms must be finite and non-negative"),
    (([100, 0], [1.0, 1.0], 2.0), "every tensor size must be a positive integer"),
    (([100, 100], [1.0, 1.0], 2.0, 5, 4), "min_bits 5 exceeds max_bits 4"),
])
def test_allocate_bits_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        allocate_bits(*args)


def test_quantize_a_model_object_as_the_command_quantizes_its_checkpoint(teacher):
    """quantize_(model, policy), torchao's shape: the model computes with the same
    quantized weights onmt_qd_quantize writes into the checkpoint."""
    from onmt_qd.compat import load_checkpoint
    from onmt_qd.models import build_model_from_checkpoint, named_weights
    from onmt_qd.quant_checkpoint import quantize_, quantize_checkpoint

    policy = QuantPolicy(bits=3, bucket_size=64)
    model = build_model_from_checkpoint(teacher)[0]
    quantized = quantize_(model, policy)
    expected = quantize_checkpoint(load_checkpoint(teacher), policy)
    weights = named_weights(expected)
    assert set(quantized) == set(expected["qd_quant"]["tensors"])
    state = model.state_dict()
    for name in quantized:
        assert torch.equal(state[name], weights[name]), name
