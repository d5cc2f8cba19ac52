"""Losses, registered by name. A loss takes (logits, labels) and returns the batch mean; its
`outputs` says how many logits the model must give for a number of classes, and `predict` turns
logits into class labels (for accuracy)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import register_loss

if TYPE_CHECKING:
    import torch


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(1)


def _softmax_outputs(classes: int) -> int:
    return classes


@register_loss("cross_entropy", {}, outputs=_softmax_outputs, predict=_argmax)
def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy (torch.nn.functional.cross_entropy)."""
    from torch.nn import functional as F  # here: the declarations load without torch

    return F.cross_entropy(logits, y)


@register_loss("manual_cross_entropy", {}, outputs=_softmax_outputs, predict=_argmax)
def manual_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy from log-softmax and one-hot targets, without torch.nn losses."""
    log_probs = logits - logits.logsumexp(dim=1, keepdim=True)
    one_hot = log_probs.new_zeros(log_probs.shape).scatter_(1, y[:, None], 1.0)
    return -(one_hot * log_probs).sum(dim=1).mean()


def _binary_outputs(classes: int) -> int:
    if classes != 2:
        from ..spec import SpecError

        raise SpecError(f"spec.loss: binary_cross_entropy needs 2 classes, the data has {classes}")
    return 1


def _threshold(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, 0] > 0).long()


@register_loss("binary_cross_entropy", {}, outputs=_binary_outputs, predict=_threshold)
def binary_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of one sigmoid output (the classic 2-4-1 XOR network): the model
    gives one logit, sigmoid(logit) is P(class 1)."""
    from torch.nn import functional as F

    return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype))
