"""The CUDA devices an option names, checked against those torch sees."""
from collections.abc import Iterable

import torch

from onmt_qd.opts.errors import OptionError


def check_devices(indices: Iterable[int | str], option: str) -> None:
    """Every GPU index that ``option`` names (-1: the CPU) is a CUDA device torch sees;
    otherwise torch fails deep inside model building with a traceback."""
    wanted = [int(i) for i in indices if int(i) >= 0]
    if not wanted:
        return
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not available:
        raise OptionError(f"{option} {wanted[0]} asks for a GPU but torch sees no CUDA device: "
                          f"leave {option} out to run on the CPU, or install a CUDA build of "
                          "torch on a GPU machine")
    if max(wanted) >= available:
        raise OptionError(f"{option} {max(wanted)}: torch sees {available} CUDA device(s), "
                          f"numbered 0 to {available - 1}")
