"""Checks several test modules share (a helper module, not a test module)."""

from __future__ import annotations

import contextlib
import http.server
import threading

import pytest
import torch

import training.engine as engine
from training.data.batch import Batch


def toy_batch(dims, seed: int = 0, class_ids=(0, 1, 2, 3), negatives: bool = True) -> tuple[Batch, torch.Tensor]:
    """8 samples (mean features) of 4 well-separated classes with the given ids; negatives, if asked for, are samples
    of another class. Returns (batch, text of the 4 classes)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor(class_ids)
    which = torch.arange(4).repeat_interleave(2)
    audio_means, video_means = torch.randn(4, dims.audio, generator=g) * 2, torch.randn(4, dims.video, generator=g) * 2
    text = torch.nn.functional.normalize(torch.randn(4, dims.text, generator=g), dim=1)

    def make(rows):
        return Batch(audio=audio_means[rows] + 0.1 * torch.randn(len(rows), dims.audio, generator=g),
                     video=video_means[rows] + 0.1 * torch.randn(len(rows), dims.video, generator=g),
                     label=ids[rows], text=text[rows])

    batch = make(which)
    if negatives:
        batch.neg = make(which.roll(2))
    return batch, text


def parameters_without_gradient(model: torch.nn.Module) -> list[str]:
    """Names of parameters that a backward pass left without a (non-zero) gradient."""
    return [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]


def first_and_last_loss(model, batch_at, steps: int, lr: float) -> tuple[float, float]:
    """Train ``steps`` steps with Adam (``batch_at(step)`` gives each step's batch); the first and the last loss."""
    opt = model.configure_optimizers(lr, 0.0)
    losses = [float(model.train_step(batch_at(step), opt)["loss"]) for step in range(steps)]
    return losses[0], losses[-1]


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


def cli_error(*argv: str) -> str | None:
    """Run the ``avzsl`` command in this process (quiet); its one-line error message, or None on success."""
    from avzsl.app.cli import main

    try:
        main(["--quiet", *argv])
    except SystemExit as e:
        return str(e.code)
    return None


@contextlib.contextmanager
def local_http_server(handler, **attrs):
    """A threaded HTTP server on 127.0.0.1 answering with ``handler`` (``attrs`` set on the server, e.g. the files
    it serves); yields the server, whose base URL is ``base_url(server)``. Shut down on exit."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    for k, v in attrs.items():
        setattr(srv, k, v)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def base_url(srv) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"
