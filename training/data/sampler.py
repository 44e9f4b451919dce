"""Class-balanced batch sampling by tensor indexing.

As in the benchmark's reference sampler: every batch draws each sample's class uniformly among the training
classes, then a sample of that class uniformly (with replacement); an "epoch" is a fixed number of such batches.
A negative for each sample comes from a class drawn uniformly among the *other* training classes, then a random
sample of that class. All draws for an epoch happen at once, on the training device, from a seeded generator.
"""

from __future__ import annotations

import torch


class ClassBalancedSampler:
    def __init__(self, labels: torch.Tensor, batch_size: int, n_batches: int, generator: torch.Generator):
        if len(labels) == 0:
            raise ValueError("cannot sample from an empty training set")
        self.batch_size, self.n_batches, self.generator = batch_size, n_batches, generator
        device = labels.device
        classes, compact = torch.unique(labels, return_inverse=True)
        self.n_classes = len(classes)
        order = torch.argsort(compact, stable=True)
        self.order = order  # positions grouped by class
        self.count = torch.bincount(compact, minlength=self.n_classes)
        self.start = torch.cumsum(self.count, 0) - self.count
        self.compact = compact.to(device)

    def _draw(self, cls: torch.Tensor) -> torch.Tensor:
        r = torch.rand(cls.shape, device=cls.device, generator=self.generator)
        within = torch.minimum((r * self.count[cls].to(r.dtype)).long(), self.count[cls] - 1)
        return self.order[self.start[cls] + within]

    def epoch(self) -> torch.Tensor:
        """(n_batches, batch_size) positions into the training set."""
        shape = (self.n_batches, self.batch_size)
        cls = torch.randint(self.n_classes, shape, device=self.order.device, generator=self.generator)
        return self._draw(cls)

    def negatives(self, positions: torch.Tensor) -> torch.Tensor:
        """A position of a different class for every entry of ``positions``."""
        if self.n_classes < 2:
            raise ValueError("negatives need at least two training classes")
        cls = self.compact[positions]
        shift = torch.randint(1, self.n_classes, positions.shape, device=positions.device, generator=self.generator)
        return self._draw((cls + shift) % self.n_classes)
