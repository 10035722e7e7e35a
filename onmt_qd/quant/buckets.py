"""Bucketing and per-bucket scaling (docs/method.md §1).

A tensor is flattened row-major and cut into contiguous buckets of ``bucket_size``
elements; each bucket is scaled to [0, 1] by its own min (beta) and range (alpha), so
one outlier only costs precision inside its own bucket."""
from __future__ import annotations

import torch


def bucket_view(flat: torch.Tensor, bucket_size: int) -> torch.Tensor:
    """[n_buckets, bucket_size] view of ``flat``. The short last bucket is padded with
    its last real value, which leaves that bucket's min and max unchanged."""
    flat = flat.reshape(-1)
    if flat.numel() == 0:
        raise ValueError("cannot bucket an empty tensor")
    n_buckets = -(-flat.numel() // bucket_size)
    padding = n_buckets * bucket_size - flat.numel()
    if padding:
        flat = torch.cat([flat, flat[-1:].expand(padding)])
    return flat.view(n_buckets, bucket_size)


def unbucket(buckets: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of ``bucket_view``: the first ``numel`` values, flat (padding dropped)."""
    return buckets.reshape(-1)[:numel]


def bucket_scales(tensor: torch.Tensor, bucket_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, beta) float32 per bucket: beta = min, alpha = max - min."""
    buckets = bucket_view(tensor.detach().float(), bucket_size)
    beta = buckets.amin(dim=1)
    alpha = buckets.amax(dim=1) - beta
    return alpha, beta


def scaled_values(tensor: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor,
                  bucket_size: int) -> torch.Tensor:
    """Flat scaled values (v - beta) / alpha clamped to [0, 1]; a constant bucket
    (alpha == 0) maps to 0 rather than dividing by zero."""
    flat = tensor.detach().float().reshape(-1)
    safe_alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
    scaled = (bucket_view(flat, bucket_size) - beta[:, None]) / safe_alpha[:, None]
    return unbucket(scaled.clamp_(0.0, 1.0), flat.numel())
