"""-precision int8 for OpenNMT-py's own engine on the CPU: torch dynamic quantization
of the Linear and LSTM layers (int8 weights, activations quantized per batch).
OpenNMT-py 3.5.1 accepts -precision int8 and means to do this, but compares the option
string with ``torch.int8`` (onmt/model_builder.py, load_test_model), so it never does."""
import warnings


def check_int8(precision, gpu):
    """torch's dynamic quantization has CPU kernels only (OpenNMT-py refuses it on a
    GPU too, after loading the model)."""
    if precision == "int8" and gpu >= 0:
        raise ValueError("-precision int8 runs on the CPU only (torch dynamic quantization "
                         "has no GPU kernels): leave out -gpu, or use -precision fp16 on the "
                         "GPU; a Transformer exported by onmt_qd_export runs int8 on a GPU")


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


def apply_precision(model, precision):
    """What OpenNMT-py's -precision int8 means to do to a loaded model (CPU only)."""
    if precision == "int8":
        quantize_dynamic_int8(model)
