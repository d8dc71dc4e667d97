"""Evidence metrics on a tiny digits model whose answers are known: it memorised its 200 training
images (100% on them, about 85% on unseen ones), so its members must stand out from unseen data,
two unseen sets must not stand out from each other, and a copy whose output for one class is
masked (features untouched) must relearn that class at once while a linear probe still reads it.
The model is trained once per module (a few seconds on CPU)."""

from __future__ import annotations

import copy

import pytest
import torch
from threadpoolctl import threadpool_limits

from rfau.config import TrainConfig
from rfau.data.datasets import load_dataset
from rfau.gates import Gates, check_gates
from rfau.metrics.classwise import classwise_evidence
from rfau.metrics.evidence import (
    RelearnConfig,
    evidence_metrics,
    forget_vs_unseen_auc,
    logits_and_features,
    member_rate_at_fpr,
    member_rate_spread,
    probe_accuracy,
    relearn_steps,
    uint8_accuracy,
)
from rfau.models.arch import build_model
from rfau.power import detectable_auc, detectable_member_rate, error_step
from rfau.records import Evaluation
from rfau.train import train_model

MASKED_CLASS = 3


class Digits:
    """The model, and three sets with their logits, penultimate features and labels."""

    def __init__(self) -> None:
        ds = load_dataset("digits")
        train = (~ds.is_test).nonzero().flatten()
        self.x = ds.x
        self.idx = {"member": train[:200], "unseen": train[200:], "test": ds.is_test.nonzero().flatten()}
        # no augmentation, no weight decay, many epochs on few images: it memorises them
        cfg = TrainConfig.preset(
            "digits", epochs=80, batch_size=32, lr=5e-3, augment_pad=0, device="cpu", seed=0
        )
        torch.manual_seed(0)  # the initial weights too: train_model seeds only what follows
        model = build_model("small_cnn", 1, 10, width=16)
        self.model = train_model(model, ds.x[self.idx["member"]], ds.y[self.idx["member"]], cfg)
        self.y = {k: ds.y[i] for k, i in self.idx.items()}
        self.out = {k: logits_and_features(self.model, ds.x[i]) for k, i in self.idx.items()}

    def logits(self, part: str) -> torch.Tensor:
        return self.out[part][0]

    def features(self, part: str) -> torch.Tensor:
        return self.out[part][1]

    def of_class(self, part: str, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and labels of one class in a part."""
        pick = self.idx[part][self.y[part] == c]
        return self.x[pick], self.y[part][self.y[part] == c]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a shared machine spinning threads cost
    several times the work: one thread for this module, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits(one_thread) -> Digits:
    d = Digits()
    assert uint8_accuracy(d.model, d.x[d.idx["member"]], d.y["member"]) == 100.0  # it memorised
    return d


@pytest.fixture(scope="module")
def masked(digits: Digits) -> torch.nn.Module:
    """The original with one class's output pushed below every other (bias only): the class is
    never predicted, the features are the original's."""
    model = copy.deepcopy(digits.model)
    x, _ = digits.of_class("member", MASKED_CLASS)
    logits, _ = logits_and_features(model, x)
    others = logits.clone()
    others[:, MASKED_CLASS] = float("-inf")
    margin = float((logits[:, MASKED_CLASS] - others.max(1).values).max())
    with torch.no_grad():
        model.fc.bias[MASKED_CLASS] -= margin + 1.0
    return model


def test_output_layer_applied_to_the_penultimate_features_gives_the_logits(digits):
    logits, feats = digits.out["test"]
    assert feats.shape == (len(logits), digits.model.fc.in_features)
    torch.testing.assert_close(digits.model.fc(feats), logits, rtol=1e-5, atol=1e-5)


def test_two_sets_the_model_never_saw_are_indistinguishable(digits):
    auc, spread, n = forget_vs_unseen_auc(
        digits.logits("unseen"), digits.y["unseen"], digits.logits("test"), digits.y["test"]
    )
    assert n > 300  # class-balanced pairs
    assert abs(auc - 0.5) < 0.1, (auc, spread)


def test_memorised_training_samples_stand_out_from_unseen_ones(digits):
    unseen_pair = forget_vs_unseen_auc(
        digits.logits("unseen"), digits.y["unseen"], digits.logits("test"), digits.y["test"]
    )[0]
    auc, spread, n = forget_vs_unseen_auc(
        digits.logits("member"), digits.y["member"], digits.logits("unseen"), digits.y["unseen"]
    )
    assert n == 200
    assert auc > 0.7 and auc - unseen_pair > 0.15, (auc, spread, unseen_pair)


def test_member_rate_is_the_false_positive_rate_on_the_reference_itself(digits):
    # the threshold calls at most 10% of each class of the reference member (ties: fewer)
    own = member_rate_at_fpr(
        digits.logits("unseen"), digits.y["unseen"], digits.logits("unseen"), digits.y["unseen"]
    )
    assert 7.0 <= own <= 10.0
    members = member_rate_at_fpr(
        digits.logits("member"), digits.y["member"], digits.logits("unseen"), digits.y["unseen"]
    )
    assert members > 30.0  # memorised samples have losses below nearly all unseen ones
    assert (
        member_rate_at_fpr(
            torch.empty(0, 10), torch.empty(0, dtype=torch.long), digits.logits("unseen"), digits.y["unseen"]
        )
        is None
    )


def test_the_original_needs_no_relearning(digits):
    x, y = digits.of_class("member", MASKED_CLASS)
    target = uint8_accuracy(digits.model, x, y)
    assert relearn_steps(digits.model, x, y, target) == 0


def test_an_output_masked_model_relearns_at_once(digits, masked):
    x, y = digits.of_class("member", MASKED_CLASS)
    assert uint8_accuracy(masked, x, y) == 0.0  # the class looks forgotten at the output
    target = uint8_accuracy(digits.model, x, y)
    assert relearn_steps(masked, x, y, target) <= 2
    # the relearning worked on a copy: the masked model itself is unchanged
    assert uint8_accuracy(masked, x, y) == 0.0


def test_relearning_that_cannot_happen_reports_the_cap(digits, masked):
    x, y = digits.of_class("member", MASKED_CLASS)
    frozen = RelearnConfig(lr=1e-12, cap=5)  # steps too small to move anything
    assert relearn_steps(masked, x, y, 100.0, frozen) == 5


def test_a_probe_reads_the_masked_class_as_well_as_in_the_original(digits, masked):
    def probe(model: torch.nn.Module) -> float:
        feats = {k: logits_and_features(model, digits.x[digits.idx[k]])[1] for k in ("unseen", "test")}
        return probe_accuracy(
            feats["unseen"], digits.y["unseen"], feats["test"], digits.y["test"], [MASKED_CLASS]
        )

    original = probe(digits.model)
    assert original > 50.0  # well above chance (10%): the features carry the class
    assert probe(masked) == original  # output masking leaves the features as they were


def test_evidence_metrics_of_a_class_request_on_the_original(digits):
    x, y = digits.of_class("member", MASKED_CLASS)
    logits = logits_and_features(digits.model, x)[0]
    holdout = (*digits.out["unseen"], digits.y["unseen"])
    test = (*digits.out["test"], digits.y["test"])
    with_ref = evidence_metrics(digits.model, (x, logits, y), holdout, test, [MASKED_CLASS], digits.model)
    # class-wise the unseen reference is the test set's samples of the class
    assert with_ref["forget_vs_unseen_n"] == with_ref["forget_vs_test_n"] == len(y)
    assert with_ref["relearn_steps"] == 0 and with_ref["relearn_target_acc"] == 100.0
    assert with_ref["probe_forgotten_class_acc"] > 50.0
    without_ref = evidence_metrics(digits.model, (x, logits, y), holdout, test, [MASKED_CLASS])
    assert without_ref["relearn_steps"] is None and without_ref["relearn_target_acc"] is None
    sample_wise = evidence_metrics(digits.model, (x, logits, y), holdout, test, [])
    assert sample_wise["probe_forgotten_class_acc"] is None
    assert sample_wise["forget_vs_unseen_auc"] is not None


def test_member_rate_spread_is_the_binomial_std_of_both_sides():
    assert member_rate_spread(90, 90) == pytest.approx(100 * (0.1 * 0.9 * 2 / 90) ** 0.5)  # 4.47
    assert member_rate_spread(30, 10**9) == pytest.approx(100 * (0.09 / 30) ** 0.5, rel=1e-6)  # 5.48
    assert member_rate_spread(0, 90) is None and member_rate_spread(90, 0) is None


# what an evaluation records that these gates do not read
UNGATED = {
    "ta": 100.0,
    "per_class_test_accuracy": {},
    "test_confidence_mean": 1.0,
    "mia_entropy": 0.0,
    "mia_entropy_test": 0.0,
}


def _evidence_gates(digits: Digits, forget: str) -> dict[str, bool]:
    """The sample-wise evidence gates (default bounds) for one part taken as the forget set,
    the model's unseen samples as the reference: name -> passed."""
    x, y = digits.x[digits.idx[forget]], digits.y[forget]
    unseen = (*digits.out["unseen"], digits.y["unseen"])
    ev = evidence_metrics(digits.model, (x, digits.logits(forget), y), unseen, unseen, [])
    neutral = {"regime": "sample", "ua": 0.0, "ra": 100.0, "ta_kept_classes": 100.0, **UNGATED}
    neutral |= {
        "mia_confidence": 0.0,
        "mia_confidence_test": 0.0,
        "counts": {"retain": 0, "forget": len(y), "test": 0},
    }
    results = check_gates(Evaluation.model_validate({**ev, **neutral}), None, Gates()).gates
    return {r.name: r.passed for r in results if r.name.startswith(("forget_vs", "forget_member"))}


def test_the_evidence_gates_fail_memorised_samples_and_pass_unseen_ones(digits):
    assert _evidence_gates(digits, "member") == dict.fromkeys(
        (
            "forget_vs_unseen_auc",
            "forget_vs_test_auc",
            "forget_member_rate_at_10fpr",
            "forget_member_rate_at_10fpr_test",
        ),
        False,
    )
    unseen = _evidence_gates(digits, "test")
    assert unseen["forget_vs_unseen_auc"] and unseen["forget_vs_test_auc"]
    # the member-rate gates on unseen samples: measured 15.6-17.5% against a bound of 18.6% on this
    # tiny model (the 10% FPR threshold is calibrated on another unseen part), so they are not
    # asserted to pass here: that margin is thin, and the closing note of issue 10 says so


def _class_evidence(digits: Digits, trained: str, unseen: str, keep_unseen: int | None = None) -> dict:
    """classwise_evidence for class 3 with ``trained`` as the images trained on and ``unseen`` as
    the class's unseen (holdout) images in its forget set; the test images as the test reference."""
    c = MASKED_CLASS
    lt, lu = digits.logits(trained)[digits.y[trained] == c], digits.logits(unseen)[digits.y[unseen] == c]
    if trained == unseen:  # two disjoint draws of the same part: every other image on each side
        lt, lu = lt[0::2], lu[1::2]
    lu = lu[:keep_unseen]
    logits = torch.cat([lt, lu])
    y = torch.full((len(logits),), c, dtype=torch.long)
    mask = torch.cat([torch.zeros(len(lt), dtype=torch.bool), torch.ones(len(lu), dtype=torch.bool)])
    of_c = digits.y["test"] == c
    return classwise_evidence((logits, y), mask, (digits.logits("test")[of_c], digits.y["test"][of_c]))


def test_class_evidence_tells_trained_images_of_a_class_from_its_unseen_ones(digits):
    remembered = _class_evidence(digits, "member", "unseen")
    assert remembered["forgotten_class_unseen_n"] >= 10
    assert remembered["forgotten_class_trained_vs_unseen_auc"] > 0.7
    assert remembered["forgotten_class_member_rate_at_10fpr"] > 30.0
    gates = Gates()
    neutral = {"regime": "class", "ra": 100.0, "ta_kept_classes": 100.0, **UNGATED}
    neutral |= {"ua": 100.0, "mia_confidence": 0.0, "mia_confidence_test": 0.0}
    neutral |= {"counts": {"retain": 0, "forget": 0, "test": 0}}
    neutral |= {"forget_accuracy_forgotten_classes": 0.0, "ta_forgotten_classes": 0.0}
    neutral |= {"probe_forgotten_class_acc": 50.0}

    def failing(ev: dict) -> set[str]:
        verdict = check_gates(Evaluation.model_validate({**ev, **neutral}), None, gates)
        return {r.name for r in verdict.gates if not r.passed}

    assert {"forgotten_class_vs_unseen_auc", "forgotten_class_member_rate"} <= failing(remembered)
    # two draws of the holdout, images the model never saw on both sides: nothing to tell apart
    # (not the test split against the holdout: another draw of writers, see rfau.gates)
    assert failing(_class_evidence(digits, "unseen", "unseen")) == set()


def test_class_evidence_with_too_few_unseen_images_is_not_measured(digits):
    few = _class_evidence(digits, "member", "unseen", keep_unseen=4)
    assert few["forgotten_class_unseen_n"] == 4
    assert few["forgotten_class_trained_vs_unseen_auc"] is None
    assert few["forgotten_class_member_rate_at_10fpr"] is None
    assert few["forgotten_class_trained_vs_test_auc"] is not None  # the test images still measure it


def test_power_is_the_minimum_detectable_effect_at_alpha_005_power_08():
    # Hanley-McNeil null SE of the AUC, n per side: 0.5 + (1.645 + 0.842) x sqrt((2n + 1) / 12n^2)
    assert detectable_auc(30) == pytest.approx(0.687, abs=1e-3)
    assert detectable_auc(200) == pytest.approx(0.572, abs=1e-3)
    assert detectable_auc(3000) == pytest.approx(0.519, abs=1e-3)
    assert detectable_auc(2) == 1.0 and detectable_auc(0) is None
    assert detectable_auc(30) > detectable_auc(300)  # fewer samples: only a larger effect shows
    # member rate: 10% plus 2.486 binomial spreads of data that looks unseen
    spread = member_rate_spread(30, 30)
    assert detectable_member_rate(spread) == pytest.approx(10 + 2.486 * spread, abs=1e-2)
    assert detectable_member_rate(None) is None
    assert error_step(4) == 25.0 and error_step(300) == pytest.approx(1 / 3)
