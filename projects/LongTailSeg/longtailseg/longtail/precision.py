"""Float32 islands inside mixed-precision training (``SOLVER.AMP.ENABLED``).

Under ``torch.autocast`` the network's convolutions and matrix products run in float16 (CUDA) or
bfloat16 (the CPU) and hand their logits on in that dtype. The long-tail math then reads them
with tensors derived from the class statistics, where half precision fails:

* float16 tops out at 65504: PAT's exp(K (1 - p_y)) / 2, LDAM's s (z - m) and the cosine
  classifier's s cos before a softmax, BLV's noise times rarity added to large logits;
* float16 flushes to zero below 6e-8 and bfloat16 keeps 8 bits of mantissa: the log-priors of
  classes with a share of 1e-6 (LVIS rare categories, ADE20K tail pixels), CB's effective-number
  weights, the 1e-12 guards of F.normalize and of MEDOE's KL, and the log-space MOE sum of K
  expert log-probabilities floored at log 1e-30.

So the losses, BLV, the cosine classifier and MEDOE's ensemble run in float32 with autocast off
(``float32_math``): their inputs are cast up once, which costs one logit-sized copy, and the
backward pass casts the gradient back down to the network's dtype. Outside autocast the casts are
no-ops (``.float()`` of a float32 tensor is the tensor itself), so fp32 training is unchanged.
"""
import contextlib
import functools

import torch

# The device types autocast knows here; a context for one not in use is never entered.
_AUTOCAST_DEVICES = ("cuda", "cpu")


@contextlib.contextmanager
def autocast_disabled():
    """Turn off every autocast that is on (CUDA and CPU), restore them on exit."""
    with contextlib.ExitStack() as stack:
        for device in _AUTOCAST_DEVICES:
            if torch.is_autocast_enabled(device):
                stack.enter_context(torch.autocast(device_type=device, enabled=False))
        yield


def to_float32(value):
    """A floating tensor below float32 (float16, bfloat16) cast to float32; anything else
    (integer labels, float32 / float64 tensors, non-tensors) as it is."""
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype not in (
            torch.float32, torch.float64):
        return value.float()
    return value


def float32_math(function):
    """Decorator: ``function`` runs with autocast off and its half-precision tensor arguments
    cast to float32 (see the module docstring for why)."""

    @functools.wraps(function)
    def in_float32(*args, **kwargs):
        with autocast_disabled():
            return function(*(to_float32(a) for a in args),
                            **{k: to_float32(v) for k, v in kwargs.items()})

    return in_float32
