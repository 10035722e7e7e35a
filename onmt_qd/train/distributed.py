"""Data-parallel training on CPU processes (torch.distributed's gloo backend; the
launch is onmt_qd/processes.py): what keeps every data-parallel process in lockstep.

OpenNMT-py's Trainer synchronizes data-parallel GPUs only (its all_gather_list makes
CUDA tensors), so on CPU processes it is built for one process (n_gpu 0) and the sums
live here: the normalization (sentences or tokens) and the gradients, summed over the
processes, so that N processes with batch b take the step one process takes with batch
N*b."""
import hashlib

import torch
import torch.distributed as dist

from onmt_qd.distill.teacher import process_stride


def in_lockstep(parallel_mode):
    """Whether this process is one of several data-parallel processes (which must hold
    the same weights after every step)."""
    return (parallel_mode == "data_parallel" and dist.is_initialized()
            and dist.get_world_size() > 1)


def collective_device():
    """Where the tensors of a collective live: the CPU for gloo, this GPU for NCCL."""
    return "cpu" if dist.get_backend() == "gloo" else f"cuda:{torch.cuda.current_device()}"


def data_shard(opt):
    """(stride, offset) of this process's training lines: one share per data-parallel
    process of the whole run (process_stride), taken by its rank."""
    stride = process_stride(opt)
    return stride, (dist.get_rank() if stride > 1 else 0)


def sum_over_processes(value):
    """The sum of a number over the CPU processes."""
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total)
    return total.item()


def sum_gradients(model):
    """Sum every trainable parameter's gradient over the CPU processes, in one
    all-reduce (a parameter this process gave no gradient counts as zeros)."""
    params = [p for p in model.parameters() if p.requires_grad]
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        summed = flat[offset:offset + p.numel()].view_as(p)
        if p.grad is None:
            p.grad = summed.clone()
        else:
            p.grad.copy_(summed)
        offset += p.numel()


def state_digest(value, sha=None):
    """SHA-256 of the tensors and numbers in a (nested) checkpoint dictionary."""
    sha = sha or hashlib.sha256()
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            sha.update(str(key).encode())
            state_digest(value[key], sha)
    elif isinstance(value, (list, tuple)):
        for item in value:
            state_digest(item, sha)
    elif isinstance(value, torch.Tensor):
        sha.update(str((value.dtype, tuple(value.shape))).encode())
        sha.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    elif value is None or isinstance(value, (bool, int, float, str)):
        sha.update(repr(value).encode())
    return sha


def check_same_state(step, parts):
    """Refuse to save unless every data-parallel process holds the same ``parts`` (the
    checkpoint's weights and optimizer state, the rounding's random state); returns
    the digest, the same for all."""
    digest = state_digest(parts).hexdigest()
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    differ = [rank for rank, other in enumerate(digests) if other != digests[0]]
    if differ:
        raise ValueError(f"step {step}: the weights of rank {differ[0]} differ from rank "
                         "0's (data-parallel processes out of step); no checkpoint written")
    return digest
