"""f-VAEGAN-D2: the gradient penalty on hand-checkable critics, the real-feature memory, the critic/generator
schedule, feature synthesis for exactly the split's unseen classes, and the final classifier."""

import io
import json

import pytest
import torch
from helpers import train_interrupted_then_resumed

from training.config import resolve_hparams
from training.data.batch import Batch
from training.models import InputDims, build_model
from training.models.fvaegan import FVAEGAN, fit_softmax_classifier, gradient_penalty

PROFILES = ["ucf/main", "ucf/cls", "activitynet/main", "activitynet/cls", "vggsound/main", "vggsound/cls", "demo"]
DIMS = InputDims(audio=3, video=4, text=5)
SMALL = {"hidden_dim": 16, "syn_num": 7, "real_per_class": 3, "cls_epochs": 30, "cls_batch_size": 16,
         "critic_iter": 5}


def _model(**hp) -> FVAEGAN:
    return build_model("fvaegan", DIMS, {**SMALL, **hp})


def _batch(labels, text_of, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.as_tensor(labels)
    n = len(labels)
    return Batch(audio=torch.randn(n, DIMS.audio, generator=g), video=torch.randn(n, DIMS.video, generator=g),
                 label=labels, text=text_of[labels])


def _text(n_ids=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n_ids, DIMS.text, generator=g), dim=1)


# ------------------------------------------------------------------------------------------- gradient penalty
def test_gradient_penalty_of_a_linear_critic_is_hand_computable():
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    real, fake, cond = torch.randn(6, 2), torch.randn(6, 2), torch.zeros(6, 1)
    gp = gradient_penalty(lambda x, a: x @ w, real, fake, cond)
    assert float(gp.detach()) == pytest.approx(16.0)  # (||w|| − 1)² = (5 − 1)² wherever x̂ lies
    gp.backward()  # the penalty trains the critic: d/dw (||w|| − 1)² = 2 (||w|| − 1) w / ||w||
    torch.testing.assert_close(w.grad, torch.tensor([4.8, 6.4]))


def test_gradient_penalty_is_taken_at_the_interpolates():
    # D(x) = ||x||², ∇ = 2x̂; x̂ = α·(1, 0): α = 0.5 -> ||∇|| = 1, penalty 0; α = 1 -> ||∇|| = 2, penalty 1
    real, fake = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.zeros(2, 2)
    gp = gradient_penalty(lambda x, a: x.pow(2).sum(1), real, fake, torch.zeros(2, 1),
                          alpha=torch.tensor([[0.5], [1.0]]))
    assert float(gp.detach()) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------- memory and schedule
def test_memory_keeps_the_last_real_features_of_each_class():
    text = _text()
    model = _model(real_per_class=2)
    model.set_training_classes(torch.tensor([1, 4]), text[[1, 4]])
    b = _batch([1, 1, 1, 4], text)
    model.remember(model.features(b), b.label)
    raw = model.features(b)
    kept = model.bank[:, :2]
    assert model.bank_writes.tolist() == [3, 1]
    assert {tuple(r) for r in kept[0].tolist()} == {tuple(raw[1].tolist()), tuple(raw[2].tolist())}
    torch.testing.assert_close(kept[1, 0], raw[3])
    b2 = _batch([4, 4], text, seed=5)  # class 4 wraps around its ring: the newest two remain
    model.remember(model.features(b2), b2.label)
    assert {tuple(r) for r in model.bank[1, :2].tolist()} == {tuple(r) for r in model.features(b2).tolist()}


def test_critic_updates_every_batch_and_the_generator_every_critic_iter_batches():
    torch.manual_seed(0)
    text = _text()
    model = _model(critic_iter=3)
    model.set_training_classes(torch.tensor([1, 4, 6]), text[[1, 4, 6]])
    opts = model.configure_optimizers(1e-3, 0.0)

    def snapshot():
        return [p.detach().clone() for p in model.generator.parameters()], \
            [p.detach().clone() for p in model.critic.parameters()]

    changed = []
    for step in range(6):
        gen, cri = snapshot()
        logs = model.train_step(_batch([1, 4, 6, 1, 4, 6], text, seed=step), opts)
        gen2, cri2 = snapshot()
        changed.append((any(not torch.equal(a, b) for a, b in zip(gen, gen2)),
                        any(not torch.equal(a, b) for a, b in zip(cri, cri2))))
        assert {"loss", "rec", "kld", "g_adv", "critic", "wasserstein", "gp"} <= set(logs)
    assert changed == [(False, True), (False, True), (True, True)] * 2


# ------------------------------------------------------------------------------------------- evaluation
def test_synthesises_syn_num_features_for_exactly_the_unseen_classes(monkeypatch):
    torch.manual_seed(0)
    text = _text()
    seen, unseen = [1, 4, 6], [2, 9]
    class_ids = sorted(seen + unseen)
    model = _model()
    model.set_training_classes(torch.tensor(seen), text[seen])
    opts = model.configure_optimizers(1e-3, 0.0)
    for step in range(4):
        model.train_step(_batch([1, 4, 6, 1, 4, 6, 1, 4], text, seed=step), opts)
    model.eval()
    x, y = model.classifier_training_set(class_ids, text[class_ids], seen, unseen)
    counts = torch.bincount(y, minlength=10)
    assert counts[unseen].tolist() == [7, 7]  # syn_num per unseen class
    assert counts[seen].tolist() == [3, 3, 3]  # real_per_class, from the memory
    assert set(y.tolist()) == set(class_ids)
    assert x.shape == (len(y), DIMS.audio + DIMS.video)
    # the synthetic block is generated from the unseen classes' text, in the order of the labels
    calls = []
    monkeypatch.setattr(model, "synthesise", lambda t, n: calls.append((t, n)) or torch.zeros(len(t) * n, x.shape[1]))
    _, y2 = model.classifier_training_set(class_ids, text[class_ids], seen, unseen)
    torch.testing.assert_close(calls[0][0], text[unseen])
    assert calls[0][1] == 7 and y2[-14:].tolist() == [2] * 7 + [9] * 7
    model.prepare_evaluation(class_ids, text[class_ids], seen, unseen)
    assert model.classifier["weight"].shape == (len(class_ids), DIMS.audio + DIMS.video)


def test_state_dict_carries_the_memory_and_the_scaling():
    torch.manual_seed(0)
    text = _text()
    model = _model()
    model.set_training_classes(torch.tensor([1, 4]), text[[1, 4]])
    opts = model.configure_optimizers(1e-3, 0.0)
    for step in range(3):
        model.train_step(_batch([1, 4, 1, 4], text, seed=step), opts)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = _model()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    fresh.set_training_classes(torch.tensor([1, 4]), text[[1, 4]])  # the engine's order in evaluate_test
    for a, b in zip(model.real_features(torch.tensor([1, 4])), fresh.real_features(torch.tensor([1, 4]))):
        torch.testing.assert_close(a, b)
    assert fresh.steps == 3


def test_final_classifier_overfits_eight_samples():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    target = torch.arange(8) % 4
    x = torch.rand(4, 6, generator=g)[target] + 0.05 * torch.rand(8, 6, generator=g)
    weight, bias = fit_softmax_classifier(x, target, 4, epochs=300, batch_size=4, lr=1e-2, beta1=0.5)
    logits = x @ weight.T + bias
    assert torch.equal(logits.argmax(1), target)
    assert float(torch.nn.functional.cross_entropy(logits, target)) < 0.3 * float(torch.log(torch.tensor(4.0)))


def test_seen_training_samples_are_classified_by_the_model_distances():
    torch.manual_seed(0)
    text = _text()
    ids = [1, 4, 6, 8]
    model = _model(real_per_class=2, cls_epochs=200, cls_batch_size=8, cls_lr=0.05)
    model.set_training_classes(torch.tensor(ids), text[ids])
    opts = model.configure_optimizers(1e-3, 0.0)
    batch = _batch([1, 4, 6, 8, 1, 4, 6, 8], text)
    for _ in range(5):
        model.train_step(batch, opts)
    model.eval()
    with torch.no_grad():
        model.prepare_evaluation(ids, text[ids], ids, [])
        d = model.distances(model.embed_videos(batch.without_text()), model.embed_classes(text[ids]))["classifier"]
    assert torch.equal(torch.tensor(ids)[d.argmin(1)], batch.label)
    assert (d >= 0).all()  # negative log-probabilities


def test_classes_must_be_prepared_before_they_are_embedded():
    text = _text()
    model = _model()
    with pytest.raises(RuntimeError, match="prepare_evaluation"):
        model.embed_classes(text[:3])


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_builds(profile):
    hp = resolve_hparams("fvaegan", profile.split("/")[0], profile.split("/")[1] if "/" in profile else "")
    model = build_model("fvaegan", InputDims(audio=8, video=12, text=10), hp["model"])
    assert model.family == "ZSL" and not model.calibrated_stacking
    assert model.latent_dim == 10 and hp["train"]["scheduler"] == "none"


# ------------------------------------------------------------------------------------------- with the engine
@pytest.fixture(scope="module")
def synthetic_dataset(tmp_path_factory) -> dict:
    """Features, two-stage splits and text of 8 classes x 6 clips, written with the project's own stores."""
    import numpy as np

    from extractors.feature_store import StoreSpec, VideoFeatures, write_store
    from extractors.splits import SplitRecipe, build_splits, write_splits
    from extractors.text_store import write_text_store

    root = tmp_path_factory.mktemp("fvaegan")
    rng = np.random.default_rng(0)
    classes = [f"class{i}" for i in range(8)]
    centres = {c: (rng.normal(size=DIMS.audio), rng.normal(size=DIMS.video)) for c in classes}
    videos = [(f"{c}_{j}", c, f"{c}_g{j}") for c in classes for j in range(6)]
    feats = [VideoFeatures(v, c, audio_mean=centres[c][0] + 0.1 * rng.normal(size=DIMS.audio),
                           video_mean=centres[c][1] + 0.1 * rng.normal(size=DIMS.video)) for v, c, _ in videos]
    write_store(root / "f.h5", StoreSpec(DIMS.audio, DIMS.video, has_sequences=False, extractor="synthetic"), feats)
    splits = build_splits(videos, SplitRecipe(n_val_unseen=2, n_test_unseen=2, val_seen_fraction=0.2,
                                              test_seen_fraction=0.2, seed=0))
    write_splits(root / "splits", splits)
    vectors = rng.normal(size=(len(classes), DIMS.text))
    write_text_store(root / "t.h5", classes, classes, vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
                     "synthetic")
    return {"features": root / "f.h5", "splits": root / "splits", "text": root / "t.h5"}


def test_interrupted_training_resumes_to_the_same_result(synthetic_dataset, tmp_path, monkeypatch):
    """The memory, the scaling and the critic/generator phase travel in the checkpoint."""
    import training.engine as engine
    from training.config import RunConfig, TrainConfig

    hp = resolve_hparams("fvaegan", "demo")
    cfg = RunConfig(model="fvaegan", seed=3, train=TrainConfig.from_dict({**hp["train"], "epochs": 3, "n_batches": 7,
                                                                          "batch_size": 16}),
                    model_params={**hp["model"], "syn_num": 10}, dataset="synthetic", feature_set="synthetic",
                    profile="demo", features=str(synthetic_dataset["features"]),
                    splits=str(synthetic_dataset["splits"]), text=str(synthetic_dataset["text"]), device="cpu")
    reference = engine.train_stage(cfg, 1, tmp_path / "ref", progress=False)
    assert train_interrupted_then_resumed(monkeypatch, cfg, tmp_path / "run") == reference
    ref_log = (tmp_path / "ref" / "log.jsonl").read_text().splitlines()
    run_log = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in ref_log]
    assert strip == [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in run_log]
    # stage 2 and the test: the stage-2 model carries its memory into evaluate_test
    selection = {"best_epoch": reference["best_epoch"], "beta": reference["beta"], "val": {}}
    engine.train_stage(cfg, 2, tmp_path / "s2", selection, progress=False)
    result = engine.evaluate_test(cfg, tmp_path / "s2" / "model.pt", selection)
    assert 0 <= result["HM"] <= 100 and result["beta"] == 0.0
