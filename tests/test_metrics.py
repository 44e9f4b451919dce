"""The protocol on hand-computed distance matrices."""

import pytest
import torch

from training.metrics import (
    evaluate,
    evaluate_modes,
    gzsl_sweep,
    harmonic_mean,
    mean_class_accuracy,
    per_class_accuracy,
    zsl_accuracy,
)

# Split classes 3, 5 (seen) and 8 (unseen); class 0 exists in the dataset but not in this split.
CLASS_IDS = [3, 5, 8]
SEEN, UNSEEN = [3, 5], [8]


def test_per_class_not_per_sample_mean():
    # class 3: 4 samples, 3 right; class 5: 1 sample, wrong -> per-class mean 0.375, per-sample mean 0.6
    target = torch.tensor([3, 3, 3, 3, 5])
    pred = torch.tensor([3, 3, 3, 5, 3])
    assert mean_class_accuracy(pred, target, [3, 5]) == pytest.approx(0.375)
    assert per_class_accuracy(pred, target, [3, 5]).tolist() == pytest.approx([0.75, 0.0])


def test_class_without_samples_is_left_out_of_the_mean():
    target, pred = torch.tensor([3, 3]), torch.tensor([3, 5])
    assert mean_class_accuracy(pred, target, [3, 5]) == pytest.approx(0.5)


def test_beta_is_added_to_seen_classes_only():
    # one unseen-class sample closest to seen class 3 (1.0) with unseen class 8 at 1.3
    dist = torch.tensor([[1.0, 2.0, 1.3]])
    target = torch.tensor([8])
    sweep = gzsl_sweep(dist, CLASS_IDS, target, SEEN, UNSEEN, torch.tensor([0.0, 0.2, 0.4], dtype=torch.float64))
    assert [s["unseen"] for s in sweep] == [0.0, 0.0, 1.0]  # 1.0+0.4 > 1.3 only at beta 0.4
    # a seen sample is never helped: its own (seen) distance grows with beta while unseen stays
    dist = torch.tensor([[1.0, 2.0, 1.3]])
    sweep = gzsl_sweep(dist, CLASS_IDS, torch.tensor([3]), SEEN, UNSEEN,
                       torch.tensor([0.0, 0.2, 0.4], dtype=torch.float64))
    assert [s["seen"] for s in sweep] == [1.0, 1.0, 0.0]


def test_classes_outside_the_split_are_never_predicted():
    # distances are only over the split's classes; class 0 cannot be chosen even though it is a dataset class
    dist = torch.tensor([[0.5, 0.9, 0.7]])
    res = evaluate(dist, CLASS_IDS, torch.tensor([3]), SEEN, UNSEEN, beta=0.0)
    assert res.seen == 1.0


def test_best_beta_is_chosen_by_harmonic_mean():
    # samples: two of seen class 3, one of seen class 5, two of unseen class 8
    dist = torch.tensor([
        [1.0, 3.0, 1.5],  # class 3: right until beta > 0.5
        [1.0, 3.0, 2.5],  # class 3: right until beta > 1.5
        [3.0, 1.0, 1.2],  # class 5: right until beta > 0.2
        [1.0, 3.0, 1.1],  # class 8: right once beta > 0.1
        [1.0, 3.0, 1.9],  # class 8: right once beta > 0.9
    ])
    target = torch.tensor([3, 3, 5, 8, 8])
    betas = torch.tensor([0.0, 0.2, 0.4, 1.0, 2.0], dtype=torch.float64)
    sweep = gzsl_sweep(dist, CLASS_IDS, target, SEEN, UNSEEN, betas)
    # beta 0:   S=(1+1)/2=1,      U=0          HM 0
    # beta 0.2: S=(1+1)/2=1,      U=0.5        HM 2/3   (0.2 is not > 0.2, so class 5 still right)
    # beta 0.4: S=(1+0)/2=0.5,    U=0.5        HM 0.5
    # beta 1.0: S=(0.5+0)/2=0.25, U=1          HM 0.4
    # beta 2.0: S=0,              U=1          HM 0
    assert [round(s["seen"], 4) for s in sweep] == [1.0, 1.0, 0.5, 0.25, 0.0]
    assert [round(s["unseen"], 4) for s in sweep] == [0.0, 0.5, 0.5, 1.0, 1.0]
    res = evaluate(dist, CLASS_IDS, target, SEEN, UNSEEN, betas=betas)
    assert res.beta == pytest.approx(0.2)
    assert res.hm == pytest.approx(2 / 3)
    assert (res.seen, res.unseen) == (pytest.approx(1.0), pytest.approx(0.5))


def test_ties_keep_the_smallest_beta():
    dist = torch.tensor([[1.0, 3.0, 5.0], [3.0, 1.0, 5.0], [5.0, 5.0, 1.0]])
    res = evaluate(dist, CLASS_IDS, torch.tensor([3, 5, 8]), SEEN, UNSEEN)
    assert res.beta == 0.0 and res.hm == pytest.approx(1.0)


def test_zsl_searches_unseen_classes_only():
    # unseen classes 7 and 8; seen class 3 is nearest for every sample but ZSL must ignore it
    ids = [3, 7, 8]
    dist = torch.tensor([
        [0.1, 0.5, 0.9],  # class 7 -> predicted 7 (ignoring 3)
        [0.1, 0.9, 0.5],  # class 8 -> predicted 8
        [0.1, 0.5, 0.6],  # class 8 -> predicted 7: wrong
        [0.1, 0.5, 0.6],  # seen sample of class 3: not part of ZSL at all
    ])
    target = torch.tensor([7, 8, 8, 3])
    # class 7: 1/1, class 8: 1/2 -> 0.75
    assert zsl_accuracy(dist, ids, target, [7, 8]) == pytest.approx(0.75)
    res = evaluate(dist, ids, target, [3], [7, 8], beta=0.0)
    assert res.zsl == pytest.approx(0.75)
    assert res.unseen == 0.0  # in GZSL at beta 0 the seen class wins every sample


def test_fixed_beta_is_applied_not_searched():
    dist = torch.tensor([[1.0, 3.0, 1.5], [1.0, 3.0, 1.1]])
    res = evaluate(dist, CLASS_IDS, torch.tensor([3, 8]), SEEN, UNSEEN, beta=0.2)
    assert res.beta == pytest.approx(0.2)
    assert (res.seen, res.unseen) == (1.0, 1.0)
    assert res.per_beta == []


def test_harmonic_mean():
    assert float(harmonic_mean(0.5, 0.25)) == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    assert float(harmonic_mean(0.0, 0.0)) == 0.0


def test_modes_carry_the_mean_beta():
    # rows: a seen sample of class 3, an unseen sample of class 8
    dist_a = torch.tensor([[1.0, 3.0, 1.35], [1.0, 3.0, 1.1]])  # both right for 0.1 < beta < 0.35 -> 0.2
    dist_b = torch.tensor([[1.0, 3.0, 1.75], [1.0, 3.0, 1.5]])  # both right for 0.5 < beta < 0.75 -> 0.6
    res = evaluate_modes({"audio": dist_a, "both": dist_b}, "both", CLASS_IDS, torch.tensor([3, 8]), SEEN, UNSEEN)
    assert res.by_mode["audio"].beta == pytest.approx(0.2)
    assert res.by_mode["both"].beta == pytest.approx(0.6)
    assert res.combined_beta == pytest.approx(0.4)
    assert res.main is res.by_mode["both"]


def test_uncalibrated_models_use_beta_zero():
    dist = torch.tensor([[1.0, 3.0, 1.1]])
    res = evaluate(dist, CLASS_IDS, torch.tensor([8]), SEEN, UNSEEN, calibrated=False)
    assert res.beta == 0.0 and res.unseen == 0.0
