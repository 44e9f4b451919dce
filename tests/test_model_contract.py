"""What every registered model promises the engine, checked on each model of the registry (training/models)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from training.data.features import Batch
from training.models import MODELS, InputDims, build_model

DIMS = InputDims(audio=16, video=12, text=8)


def _batch(n: int = 8, steps: int = 3, seed: int = 0) -> tuple[Batch, torch.Tensor]:
    """Mean features and per-step sequences (for the temporal models) of ``n`` videos of 4 classes."""
    g = torch.Generator().manual_seed(seed)
    label = torch.arange(n) % 4
    text = torch.nn.functional.normalize(torch.randn(4, DIMS.text, generator=g), dim=1)
    audio, video = torch.randn(n, steps, DIMS.audio, generator=g), torch.randn(n, steps, DIMS.video, generator=g)
    pad = torch.zeros(n, steps, dtype=torch.bool)
    return Batch(audio=audio.mean(1), video=video.mean(1), label=label, text=text[label], audio_seq=audio,
                 audio_pad=pad, video_seq=video, video_pad=pad), text


@pytest.mark.parametrize("name", sorted(MODELS))
def test_evaluation_never_sees_the_class_text(name):
    """Embedding a video must not depend on its class text or its negatives: the same embedding, in every
    evaluation mode, without them and with another class's text and negatives."""
    torch.manual_seed(0)
    model = build_model(name, DIMS).eval()
    batch, text = _batch()
    model.set_training_classes(torch.arange(4), text)
    with torch.no_grad():
        expected = model.embed_videos(batch.without_text())
        other, _ = _batch(seed=1)
        leaked = model.embed_videos(replace(batch, text=batch.text.flip(0), neg=other))
    assert set(leaked) == set(expected)
    for mode in expected:
        torch.testing.assert_close(leaked[mode], expected[mode], msg=f"{name}: mode {mode!r}")
