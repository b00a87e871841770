"""The streaming property: frame-at-a-time with carried state equals the whole sequence."""

from __future__ import annotations

import pytest
import torch

from lrcn.model import LRCN, LRCNConfig, ObjectColour, caption_targets, decode
from lrcn.vocab import BOS_ID, EOS_ID, PAD_ID
from stream.model.keyframes import thumbnails

T = 12


@pytest.fixture(scope="module")
def model() -> LRCN:
    torch.manual_seed(0)
    config = LRCNConfig(vocab_size=11, backbone="mobilenet_v3_small", pretrained=False,
                        input_size=32, motion_pool=2, feature_dim=16, motion_channels=8,
                        motion_dim=8, memory_hidden=24, word_embed=8, word_hidden=16,
                        max_caption_len=6)
    return LRCN(config).eval()


@pytest.fixture(scope="module")
def stats_model(model) -> LRCN:
    torch.manual_seed(0)
    return LRCN(LRCNConfig(**{**model.config.to_dict(), "motion_stats": True,
                              "object_colour": True})).eval()


@pytest.fixture(scope="module")
def encoded(model):
    torch.manual_seed(1)
    frames = torch.randint(0, 256, (T, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        appearance = model.encoder(frames)  # (T, F)
    return appearance, torch.from_numpy(thumbnails(frames.numpy(), 2))  # thumbs (T, 3, 16, 16)


def _whole(model, appearance, thumbs, cont):
    with torch.no_grad():
        out, _ = model.memory(appearance.unsqueeze(0), thumbs.unsqueeze(0), cont.unsqueeze(0),
                              model.memory.init_state(1))
    return out[0]


def _stepwise(model, appearance, thumbs, cont):
    state = model.memory.init_state(1)
    outs = []
    with torch.no_grad():
        for t in range(len(cont)):
            out, state = model.memory.step(appearance[t : t + 1], thumbs[t : t + 1],
                                           cont[t : t + 1], state)
            outs.append(out[0])
    return torch.stack(outs)


def test_step_by_step_equals_whole_sequence(model, encoded):
    appearance, thumbs = encoded
    cont = torch.ones(T)
    cont[0] = 0
    whole = _whole(model, appearance, thumbs, cont)
    steps = _stepwise(model, appearance, thumbs, cont)
    torch.testing.assert_close(steps, whole, atol=1e-5, rtol=1e-5)
    assert decode(model.captioner, steps, 6) == decode(model.captioner, whole, 6)
    assert decode(model.captioner, steps, 6, beam=3) == decode(model.captioner, whole, 6, beam=3)
    # The memory really carries something: the outputs are not all the same.
    assert not torch.allclose(whole[3], whole[4])


def test_reset_equals_fresh_run_on_suffix(model, encoded):
    appearance, thumbs = encoded
    cut = 5
    cont = torch.ones(T)
    cont[0] = cont[cut] = 0
    with_reset = _whole(model, appearance, thumbs, cont)
    suffix_cont = torch.ones(T - cut)
    suffix_cont[0] = 0
    fresh = _whole(model, appearance[cut:], thumbs[cut:], suffix_cont)
    torch.testing.assert_close(with_reset[cut:], fresh, atol=1e-5, rtol=1e-5)
    stepwise = _stepwise(model, appearance, thumbs, cont)
    torch.testing.assert_close(stepwise[cut:], fresh, atol=1e-5, rtol=1e-5)
    # Without the reset the carried memory changes the outputs.
    no_reset = _whole(model, appearance, thumbs, torch.cat([torch.zeros(1), torch.ones(T - 1)]))
    assert not torch.allclose(no_reset[cut:], fresh, atol=1e-4)


def test_caption_frames_matches_encoder_then_memory(model):
    frames = torch.randint(0, 256, (T, 32, 32, 3), dtype=torch.uint8)
    # Batching the encoder in chunks of 5 must not change anything.
    assert model.caption_frames(frames, batch=5) == model.caption_frames(frames, batch=T)


def _log_prob(model, memory, ids):
    tokens_in, targets = caption_targets([ids + [EOS_ID]], 16)
    with torch.no_grad():
        logp = torch.log_softmax(model.captioner(memory.unsqueeze(0), tokens_in), dim=-1)
    return float(logp[0].gather(1, targets[0].unsqueeze(1)).sum())


def test_beam_search_is_at_least_as_likely_as_greedy(model):
    # Varied memory outputs: the frames above give nearly the same one, whose captions never end
    # within the limit, and then nothing would be compared.
    memory = 2 * torch.randn(256, model.config.memory_dim,
                             generator=torch.Generator().manual_seed(2))
    greedy = decode(model.captioner, memory, 6)
    beam = decode(model.captioner, memory, 6, beam=4)
    compared = improved = 0
    for m, g, b in zip(memory, greedy, beam, strict=True):
        if len(g) < 6 and len(b) < 6:  # both finished with <eos> within the length limit
            gain = _log_prob(model, m, b) - _log_prob(model, m, g)
            assert gain >= -1e-5, (g, b)
            compared += 1
            improved += gain > 1e-3
    # Some pairs were compared, and beam search found a likelier caption than greedy for some.
    assert compared > 0 and improved > 0, (compared, improved)
    assert decode(model.captioner, memory, 6, beam=1) == greedy


def test_caption_targets_shift_by_one():
    tokens_in, targets = caption_targets([[5, 6, EOS_ID], [7, EOS_ID]], 16)
    assert tokens_in.tolist() == [[BOS_ID, 5, 6], [BOS_ID, 7, PAD_ID]]
    assert targets.tolist() == [[5, 6, EOS_ID], [7, EOS_ID, PAD_ID]]


def test_config_round_trip_and_validation():
    config = LRCNConfig(vocab_size=5)
    assert LRCNConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="pool"):
        LRCNConfig(vocab_size=5, pool="max")
    with pytest.raises(TypeError):
        LRCNConfig.from_dict({"vocab_size": 5, "unknown": 1})


def _disk_frames(radius0: float, radius1: float, frames: int = 8) -> torch.Tensor:
    """(frames, 32, 32, 3) uint8: an antialiased red disk on gray, its radius changing."""
    from lrcn import world

    out = torch.full((frames, 32, 32, 3), 60, dtype=torch.uint8)
    for t in range(frames):
        radius = radius0 + (radius1 - radius0) * t / (frames - 1)
        rows, cols, cover = world._shape_coverage("circle", 16.0, 16.0, radius, 32, 32)
        blend = 60 + torch.from_numpy(cover)[:, :, None] * (torch.tensor([220, 40, 40]) - 60)
        out[t, rows, cols] = blend.round().to(torch.uint8)
    return out


@pytest.mark.parametrize(("radius1", "sign"), [(7.0, 1), (5.0, -1), (6.0, 0)])
def test_motion_stats_tell_slow_growing_and_shrinking_from_still(stats_model, radius1, sign):
    model = stats_model
    # A radius change of 1/7 pixel per frame: hardly visible in any single difference.
    frames = _disk_frames(6.0, radius1)
    thumbs = torch.from_numpy(thumbnails(frames.numpy(), 2)).unsqueeze(0)  # (1, T, 3, 16, 16)
    cont = torch.ones(1, len(frames))
    cont[0, 0] = 0
    stacked, _, _ = model.memory._motion_inputs(thumbs, cont, model.memory.init_state(1))
    stats = model.memory.motion._stats(stacked[0])  # (T, 7)
    mass_vs_prev, mass_vs_average = stats[1:, 1], stats[1:, 4]
    if sign == 0:  # (the running average differs from a constant by rounding only)
        assert mass_vs_prev.abs().max() == 0 and mass_vs_average.abs().max() < 1e-4
    else:
        assert (torch.sign(mass_vs_prev) == sign).all()
        assert (torch.sign(mass_vs_average) == sign).all()
        # The running average lags: its difference grows as the change goes on.
        assert abs(float(mass_vs_average[-1])) > abs(float(mass_vs_prev[-1]))


def test_step_by_step_equals_whole_sequence_with_motion_stats(stats_model, encoded):
    appearance, thumbs = encoded
    cont = torch.ones(T)
    cont[0] = cont[7] = 0
    whole = _whole(stats_model, appearance, thumbs, cont)
    torch.testing.assert_close(_stepwise(stats_model, appearance, thumbs, cont), whole)


def _scene(shape_rgb, background, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    """(1, 3, 56, 56) thumbnail: a 6x6 shape at (10, 30) on a background graded left to right
    from ``background[0]`` to ``background[1]`` (RGB 0..255), with Gaussian noise."""
    ramp = torch.linspace(0, 1, 56).view(1, 1, 56)
    low, high = (torch.tensor(c, dtype=torch.float32).view(3, 1, 1) for c in background)
    image = (low + (high - low) * ramp).expand(3, 56, 56).clone()
    image[:, 10:16, 30:36] = torch.tensor(shape_rgb, dtype=torch.float32).view(3, 1, 1)
    generator = torch.Generator().manual_seed(seed)
    image += noise * torch.randn(image.shape, generator=generator)
    return (image.clamp(0, 255) / 255).unsqueeze(0)


@pytest.mark.parametrize("background", [((60, 60, 60), (60, 60, 60)),
                                        ((40, 50, 55), (90, 100, 110)),  # graded, teal
                                        ((100, 80, 110), (30, 30, 30))])  # graded, violet
@pytest.mark.parametrize("shape_rgb", [(230, 50, 50), (50, 90, 230), (160, 60, 200),
                                       (40, 200, 60)])
def test_object_colour_is_the_shapes_colour_whatever_the_background(shape_rgb, background):
    """The cue reads the shape's own RGB (within 6 levels), on flat and graded grounds, with
    sensor noise of 8 levels; the background's colour does not leak into it, and its contrast
    is the shape's colour less the ground under it."""
    features = ObjectColour(56)(_scene(shape_rgb, background, noise=8.0))[0]
    rgb = (features[:3] / 2 + 0.5) * 255
    torch.testing.assert_close(rgb, torch.tensor(shape_rgb, dtype=torch.float32), atol=6.0,
                               rtol=0.0)
    chroma = features[6:] / 2 * 255
    expected = torch.tensor(shape_rgb, dtype=torch.float32)
    torch.testing.assert_close(chroma, expected - expected.mean(), atol=6.0, rtol=0.0)
    low, high = (torch.tensor(c, dtype=torch.float32) for c in background)
    ground = low + (high - low) * 32.5 / 55  # the ramp under the shape's middle column
    # (the fitted ground leans a little toward the shape, which it cannot tell from the ground)
    torch.testing.assert_close(features[3:6] / 2 * 255, expected - ground, atol=15.0, rtol=0.0)


def test_object_colour_of_a_blank_frame_is_finite_and_colourless():
    features = ObjectColour(16)(torch.full((2, 3, 16, 16), 0.3))
    assert torch.isfinite(features).all()
    assert features[:, 3:].abs().max() < 1e-6  # no contrast, no chroma
