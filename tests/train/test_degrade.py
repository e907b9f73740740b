"""Camera degradations: each one does what its name says, on a real photo-like image."""

import numpy as np
import pytest

from edgesense.train.degrade import BENCH_DEGRADATIONS, DEGRADATIONS, DegradeOptions, degrade, degrade_randomly


def _scene(batch=4, size=96):
    """A textured image: gradients and stripes, so blur and occlusion have something to remove."""
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = 127 + 100 * np.sign(np.sin(xx / 1.5))
    image = np.stack([stripes, (yy * 255 / size), (xx * 255 / size)], axis=-1)
    return np.repeat(image[None].astype(np.uint8), batch, axis=0)


def _luma(x):
    return x.astype(np.float64).mean(axis=(1, 2, 3))


def test_dark_and_overexposed_move_brightness_the_right_way():
    x = _scene()
    rng = np.random.default_rng(0)
    assert np.all(_luma(degrade(x, "dark", rng)) < 0.3 * _luma(x))
    assert np.all(_luma(degrade(x, "overexposed", rng)) > 1.3 * _luma(x))


def test_blur_removes_fine_detail_but_keeps_the_mean():
    x = _scene()
    out = degrade(x, "blurred", np.random.default_rng(0))
    detail = lambda a: np.abs(np.diff(a[..., 0].astype(np.float64), axis=2)).mean()  # noqa: E731  (the stripes)
    assert detail(out) < 0.3 * detail(x)
    assert np.allclose(_luma(out), _luma(x), rtol=0.05)


def test_occlusion_hides_the_configured_share_with_one_gray_block():
    x = np.zeros((8, 96, 96, 3), np.uint8)
    options = DegradeOptions(occluded_area_range=(0.5, 0.5))
    out = degrade(x, "occluded", np.random.default_rng(1), options)
    hidden = (out != 0).all(axis=-1).mean(axis=(1, 2))
    assert np.all(np.abs(hidden - 0.5) < 0.06)


def test_noise_changes_pixels_without_shifting_the_mean():
    x = np.full((2, 32, 32, 3), 128, np.uint8)
    out = degrade(x, "noisy", np.random.default_rng(2))
    assert out.std() > 10
    assert abs(out.mean() - 128) < 3


def test_random_degradation_hits_about_the_asked_share_and_says_which():
    x = _scene(batch=400, size=16)
    out, hit = degrade_randomly(x, np.random.default_rng(3), probability=0.3)
    assert 0.22 < hit.mean() < 0.38
    assert np.array_equal(out[~hit], x[~hit])
    assert not np.array_equal(out[hit], x[hit])
    assert set(BENCH_DEGRADATIONS) <= set(DEGRADATIONS)


def test_same_seed_same_frames_and_the_input_is_untouched():
    x = _scene()
    before = x.copy()
    a = degrade(x, "occluded", np.random.default_rng(5))
    b = degrade(x, "occluded", np.random.default_rng(5))
    assert np.array_equal(a, b) and np.array_equal(x, before)


@pytest.mark.parametrize("call, field", [
    (lambda x: degrade(x, "foggy", np.random.default_rng()), "kind"),
    (lambda x: degrade(x.astype(np.float32), "dark", np.random.default_rng()), "images"),
    (lambda x: degrade_randomly(x, np.random.default_rng(), probability=1.5), "probability"),
    (lambda x: DegradeOptions(dark_gain_range=(0.5, 0.1)), "dark_gain_range"),
])
def test_bad_arguments_name_the_field(call, field):
    with pytest.raises(ValueError, match=field):
        call(_scene(batch=1))
