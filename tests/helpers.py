"""Checks several test modules share (a helper module, not a test module)."""

from __future__ import annotations

import pytest
import torch

import training.engine as engine
from training.data.features import Batch


def parameters_without_gradient(model: torch.nn.Module) -> list[str]:
    """Names of parameters that a backward pass left without a (non-zero) gradient."""
    return [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]


def assert_evaluation_ignores_text(model, batch: Batch, mode: str = "video") -> None:
    """Embedding a video must not depend on its class text (shuffled text, same embedding)."""
    expected = model.embed_videos(batch.without_text())[mode]
    shuffled = Batch(audio=batch.audio, video=batch.video, label=batch.label, text=batch.text.flip(0),
                     audio_seq=batch.audio_seq, audio_pad=batch.audio_pad, video_seq=batch.video_seq,
                     video_pad=batch.video_pad)
    torch.testing.assert_close(model.embed_videos(shuffled)[mode], expected)


def train_interrupted_then_resumed(monkeypatch, cfg, run_dir, interrupt_at: int = 2) -> dict:
    """Stage 1 killed during its ``interrupt_at``-th evaluation, then run again in the same directory."""
    real, calls = engine.evaluate_split, {"n": 0}

    def dies(*args, **kw):
        calls["n"] += 1
        if calls["n"] == interrupt_at:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(engine, "evaluate_split", dies)
    with pytest.raises(KeyboardInterrupt):
        engine.train_stage(cfg, 1, run_dir, progress=False)
    monkeypatch.setattr(engine, "evaluate_split", real)
    return engine.train_stage(cfg, 1, run_dir, progress=False)
