"""Model FLOPs of BERT-style sequence classifiers, for the throughput and MFU figures of the
benchmarks.

Counted: the matrix products (2 FLOPs per multiply-add) of one forward pass over a padded
``(batch, length)`` input, as the hardware computes it (padding positions included):

    per layer   8 B T d^2      query, key, value and output projections
                4 B T d f      the feed-forward block (d -> f -> d)
                4 B T^2 d      attention scores Q K^T and the weighted sum of the values
    head        2 B d^2 + 2 B d C   BERT's pooler / DistilBERT's pre-classifier, the classifier

Embedding look-ups, layer norms, softmax and activations are left out, as usual for model FLOPs.
A backward pass that gives the weights' and the inputs' gradients costs twice its forward, so a
trained model's forward and backward is ``3 * forward_flops``, a frozen model's forward
``forward_flops``. Model FLOPs utilisation (MFU) is FLOPs per second over the hardware's peak.
"""

import torch

# Dense bfloat16 tensor-core peaks (TFLOP/s) of the data-centre GPUs the benchmarks name; for any
# other device, pass --peak_tflops.
BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0}


def forward_flops(config, batch_size, length):
    """Matrix-product FLOPs of one forward of a BERT or DistilBERT classifier (its ``config``)
    on ``batch_size`` sequences of ``length`` positions."""
    width = getattr(config, "hidden_size", None) or config.dim
    inner = getattr(config, "intermediate_size", None) or config.hidden_dim
    layers = getattr(config, "num_hidden_layers", None) or config.n_layers
    tokens = batch_size * length
    per_layer = 8 * tokens * width**2 + 4 * tokens * width * inner + 4 * tokens * length * width
    head = 2 * batch_size * width**2 + 2 * batch_size * width * config.num_labels
    return layers * per_layer + head


def batch_flops(model, batch, passes):
    """``passes`` forwards' worth of FLOPs of ``model`` on ``batch`` (3 for a forward and backward)."""
    return passes * forward_flops(model.config, *batch["input_ids"].shape)


def peak_tflops(device, given=None):
    """``given``, else the bfloat16 peak of a known CUDA device, else None."""
    if given is not None:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for model, peak in BF16_PEAK_TFLOPS.items() if model in name), None)
