"""-precision int8 for OpenNMT-py's own engine on the CPU: torch dynamic quantization
of the Linear and LSTM layers (int8 weights, activations quantized per batch).
OpenNMT-py 3.5.1 accepts -precision int8 and means to do this, but compares the option
string with ``torch.int8`` (onmt/model_builder.py, load_test_model), so it never does."""
import warnings

# torch's dynamic quantization kernels are CPU only; OpenNMT-py refuses int8 on a GPU too
INT8_GPU_REFUSAL = ("-precision int8 runs on the CPU only (torch dynamic quantization has no "
                    "GPU kernels): leave out -gpu, or use -precision fp16 on the GPU; for a "
                    "Transformer, onmt_qd_export -quantization int8 gives CTranslate2's GPU int8")


def quantize_dynamic_int8(model):
    """Replace ``model``'s Linear, LSTM and LSTMCell layers by their dynamically
    quantized int8 versions, in place (embeddings stay fp32); returns ``model``."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    layers = {torch.nn.Linear, torch.nn.LSTM, torch.nn.LSTMCell}
    with warnings.catch_warnings():  # torch 2.13 deprecates torch.ao.quantization for torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        return quantize_dynamic(model, layers, dtype=torch.qint8, inplace=True)
