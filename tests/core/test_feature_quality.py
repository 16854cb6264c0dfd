"""Judging class images with other networks: recognition, transferability, plausibility."""

from __future__ import annotations

import pytest
import torch

from cnnvis_widgets.core import feature_quality as fq
from cnnvis_widgets.data.samples import sample_image

ESPRESSO, GOLDFISH = 967, 1
CAT_CLASSES = range(281, 286)


@pytest.fixture(scope="module")
def photos(lite0) -> torch.Tensor:
    """The coffee and cat photos as Lite0 takes them (224 px pixels)."""
    return torch.cat([lite0.to_pixels(sample_image(n)) for n in ("coffee", "cat")])


def test_real_photos_transfer_as_their_class(lite0, lite2, photos) -> None:
    # 224 px pixels made for Lite0, resized to 260 px for Lite2: still espresso and a cat
    for judge in (lite0, lite2):
        r = fq.recognition(judge, photos, [ESPRESSO, 281])
        assert r.judge == judge.name and r.top1[0] == ESPRESSO and r.top1[1] in CAT_CLASSES
        assert r.target_prob[0] > 0.8 and 0 < r.target_prob[1] < 1
        assert r.accuracy == 0.5  # the cat's top-1 is another cat class than tabby
    wrong = fq.recognition(lite2, photos, [GOLDFISH, GOLDFISH])
    assert wrong.accuracy == 0 and wrong.mean_target_prob < 0.01


def test_penultimate_features_are_what_the_last_linear_layer_reads(lite0, photos) -> None:
    assert fq.penultimate_layer(lite0) == "_fc"
    feats = fq.penultimate_features(lite0, photos)
    assert feats.shape == (2, 1280)
    with torch.no_grad():
        logits = lite0.logits(lite0.normalize(photos)).cpu()
        torch.testing.assert_close(lite0.model._fc(feats), logits, rtol=1e-4, atol=1e-4)


def test_distance_of_a_photo_to_itself_is_zero(lite0, photos) -> None:
    refs = fq.photo_features(lite0)
    p = fq.plausibility(lite0, photos, [ESPRESSO, GOLDFISH], references=refs)
    # coffee is judged against the photos of espresso (itself); no packaged photo shows a
    # goldfish, so the cat photo is measured to its nearest packaged photo: itself
    assert p.reference == ["coffee", "cat"] and p.of_class == [True, False]
    assert p.distance == pytest.approx([0, 0], abs=1e-5)
    # a photo of another class is far from the cat photos
    other = fq.plausibility(lite0, photos[:1], [281], references=refs)
    assert other.reference == ["cat"] and other.of_class == [True] and other.distance[0] > 0.2


def test_class_images_come_from_the_am_core_and_are_judged(lite0, lite2) -> None:
    start = fq.class_images(lite0, [ESPRESSO, 281], preset="lucid", steps=1, size=32, seed=0)
    made = fq.class_images(lite0, [ESPRESSO, 281], preset="lucid", steps=8, size=32, seed=0)
    assert made.images.shape == (2, 3, 32, 32) and made.classes == [ESPRESSO, 281]
    assert made.steps == 8 and made.preset == "lucid" and made.model == lite0.name
    assert made.fingerprint == lite0.fingerprint()
    # each image raised its own class's logit (the objective is one class per image)
    assert (made.activation > start.activation + 1).all()
    own = fq.transferability(made, lite0)
    other = fq.transferability(made, lite2)
    assert own.judge == lite0.name and other.judge == lite2.name
    assert own.classes == other.classes == [ESPRESSO, 281]
    # the maker's probabilities are those of the images' logits
    logits = lite0.logits(lite0.normalize(torch.nn.functional.interpolate(
        made.images, (224, 224), mode="bilinear", align_corners=False)))  # fmt: skip
    want = logits.softmax(1)[[0, 1], [ESPRESSO, 281]].tolist()
    assert own.target_prob == pytest.approx(want, rel=1e-4)
    p = fq.plausibility(lite2, made.images, made.classes)
    assert p.of_class == [True, True] and all(0 < d <= 2 for d in p.distance)


def test_bad_input_is_refused(lite0, photos) -> None:
    with pytest.raises(ValueError, match="2 images but 1 classes"):
        fq.recognition(lite0, photos, [ESPRESSO])
    with pytest.raises(IndexError, match="out of range"):
        fq.recognition(lite0, photos, [ESPRESSO, 5000])
    with pytest.raises(ValueError, match="at least one class"):
        fq.class_images(lite0, [], steps=1)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        fq.penultimate_features(lite0, photos[:, :1])
