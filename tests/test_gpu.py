"""GPU checks (skipped without CUDA): quantized training keeps nn.LSTM's flattened
cuDNN weights valid, the GPU quantizer agrees with the CPU one, and bf16 autocast
training runs on CUDA."""
import pytest
import torch

from onmt_qd.quant import QuantPolicy
from onmt_qd.train.fakequant import FakeQuantizer

from test_precision import check_bf16_training

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def test_fake_quantized_lstm_runs_the_quantized_weights_on_cudnn():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(64, 128, num_layers=2, bidirectional=True).cuda()
    x = torch.randn(7, 5, 64, device="cuda")
    fake = FakeQuantizer(lstm, QuantPolicy(bits=2))
    fake.quantize(stochastic=False)
    quantized_out, _ = lstm(x)
    reference = torch.nn.LSTM(64, 128, num_layers=2, bidirectional=True).cuda()
    reference.load_state_dict(lstm.state_dict())  # fresh module, fresh flat buffer
    expected, _ = reference(x)
    assert torch.allclose(quantized_out, expected, atol=1e-6)
    fake.restore()
    restored_out, _ = lstm(x)
    assert not torch.allclose(restored_out, quantized_out, atol=1e-4)


def test_gpu_and_cpu_quantization_agree_bit_for_bit():
    torch.manual_seed(0)
    w = torch.randn(1000, 300)
    policy = QuantPolicy(bits=4)
    cpu = policy.quantize("w", w)
    gpu = policy.quantize("w", w.cuda())
    assert torch.equal(cpu.levels, gpu.levels.cpu())
    assert torch.equal(cpu.dequantize(), gpu.dequantize().cpu())


def test_bf16_quantized_distillation_trains_on_the_gpu(data, teacher, tmp_path):
    check_bf16_training(data, teacher, tmp_path, "-world_size", 1, "-gpu_ranks", 0)
