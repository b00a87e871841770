"""The streaming property: frame-at-a-time with carried state equals the whole sequence."""

from __future__ import annotations

import pytest
import torch

from lrcn.model import LRCN, LRCNConfig, caption_targets, decode
from lrcn.vocab import BOS_ID, EOS_ID, PAD_ID
from stream.keyframes import thumbnails

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
