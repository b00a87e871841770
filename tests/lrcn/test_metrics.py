"""Metrics on hand-made inputs with known scores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lrcn.metrics import (
    COCO_METRICS,
    MetricsError,
    _ptb_tokenize,
    caption_changes,
    caption_lag,
    coco_caption_scores,
    frame_exact_match,
    java_available,
    lag_summary,
    normalize_caption,
    wrong_runs,
)
from tests.conftest import require_tool


@pytest.fixture
def java() -> str:
    return require_tool("java", "METEOR and PTB tokenizer")


# --------------------------------------------------------------------------------------------------
# Frame level
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A red circle moves left.", "a red circle moves left"),
        ("  a  red\tcircle\nmoves left  ", "a red circle moves left"),
        ("a red circle moves left .", "a red circle moves left"),
        ("a red circle moves left...", "a red circle moves left"),
        ("", ""),
        # Only trailing periods go: inner punctuation is part of the caption.
        ("a.b circle", "a.b circle"),
    ],
)
def test_normalize_caption(raw: str, expected: str) -> None:
    assert normalize_caption(raw) == expected


def test_frame_exact_match_skips_frames_without_target() -> None:
    predictions = ["a dog runs", "a dog runs", "junk", "a cat sits", "junk"]
    targets: list[set[str] | None] = [None, {"a dog runs"}, None, {"a cat sits"}, None]
    assert frame_exact_match(predictions, targets) == (2, 2)


def test_frame_exact_match_any_reference_after_normalization() -> None:
    predictions = ["A Cat  sits.", "a cat lies", "a cat", "a dog"]
    references = ["a cat sits", "A cat lies."]
    assert frame_exact_match(predictions, [references] * 4) == (2, 4)


def test_frame_exact_match_empty_video() -> None:
    assert frame_exact_match([], []) == (0, 0)


def test_frame_exact_match_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1"):
        frame_exact_match(["a", "b"], [None])
    with pytest.raises(ValueError, match="frame 1"):
        frame_exact_match(["a", "b"], [None, set()])
    with pytest.raises(ValueError, match="not a string"):
        frame_exact_match(["a"], ["a"])


# --------------------------------------------------------------------------------------------------
# Lag
# --------------------------------------------------------------------------------------------------

# Frames 0-1 belong to another segment; the segment under test is [2, 7).
_REFS = {"a cat sits", "a cat is sitting"}


def _video(segment: list[str]) -> list[str]:
    return ["a dog runs", "a dog runs", *segment, "noise"]


def test_caption_lag_correct_from_start() -> None:
    assert caption_lag(_video(["a cat sits"] * 5), 2, 7, _REFS) == 0


def test_caption_lag_settles_at_frame_k() -> None:
    segment = ["a dog runs", "a dog runs", "a cat", "A cat is sitting.", "a cat sits"]
    assert caption_lag(_video(segment), 2, 7, _REFS) == 3


def test_caption_lag_flicker_counts_last_switch_to_correct() -> None:
    segment = ["a cat sits", "a dog runs", "a cat sits", "a cat sits", "a cat sits"]
    assert caption_lag(_video(segment), 2, 7, _REFS) == 2
    segment = ["a cat sits", "a cat sits", "a cat sits", "a dog", "a cat sits"]
    assert caption_lag(_video(segment), 2, 7, _REFS) == 4


def test_caption_lag_never_settles() -> None:
    assert caption_lag(_video(["a cat sits"] * 4 + ["a dog"]), 2, 7, _REFS) is None
    assert caption_lag(_video(["a dog"] * 5), 2, 7, _REFS) is None


def test_caption_lag_one_frame_segment() -> None:
    assert caption_lag(["a cat sits"], 0, 1, _REFS) == 0
    assert caption_lag(["a dog"], 0, 1, _REFS) is None


@pytest.mark.parametrize(("start", "end"), [(3, 3), (4, 2), (-1, 2), (0, 6)])
def test_caption_lag_rejects_bad_segments(start: int, end: int) -> None:
    with pytest.raises(ValueError, match="segment"):
        caption_lag(["a"] * 5, start, end, {"a"})


def test_caption_lag_rejects_empty_references() -> None:
    with pytest.raises(ValueError, match="empty set of references"):
        caption_lag(["a"] * 5, 0, 5, set())


def test_lag_summary_all_settled_matches_numpy() -> None:
    lags = [7, 0, 3, 1, 9, 2, 2, 5, 4, 8]
    summary = lag_summary(lags)
    assert summary["segments"] == 10
    assert summary["unsettled"] == 0
    assert summary["median"] == pytest.approx(np.percentile(lags, 50)) == pytest.approx(3.5)
    assert summary["p90"] == pytest.approx(np.percentile(lags, 90)) == pytest.approx(8.1)


def test_lag_summary_unsettled_rank_above_every_lag() -> None:
    # Sorted: 0 1 2 3 inf. Median is rank 2; p90 sits at rank 3.6, between 3 and inf.
    summary = lag_summary([3, None, 0, 2, 1])
    assert summary == {"segments": 5, "unsettled": 1, "median": 2.0, "p90": None}
    # Sorted: 0 x10, inf. p90 is exactly rank 9, still finite (no inf * 0 = nan).
    summary = lag_summary([0] * 10 + [None])
    assert summary == {"segments": 11, "unsettled": 1, "median": 0.0, "p90": 0.0}
    # More than half never settles: the median itself is infinite.
    summary = lag_summary([None, 4, None])
    assert summary == {"segments": 3, "unsettled": 2, "median": None, "p90": None}


def test_lag_summary_is_strict_json() -> None:
    for lags in ([], [None], [1, None, 2], [0, 5]):
        json.dumps(lag_summary(lags), allow_nan=False)
    assert lag_summary([]) == {"segments": 0, "unsettled": 0, "median": None, "p90": None}


# --------------------------------------------------------------------------------------------------
# COCO caption metrics: input checks (no Java needed)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidates", "references", "message"),
    [
        ({}, {}, "no captions"),
        ({"v1": "a", "v2": "b"}, {"v1": ["a"]}, "'v2' has a candidate but no references"),
        ({"v1": "a"}, {"v1": ["a"], "v3": ["c"]}, "'v3' has references but no candidate"),
        ({}, {"v1": ["a"]}, "'v1' has references but no candidate"),
        ({"v1": "a"}, {"v1": []}, "'v1' has no reference sentence"),
        ({"v1": "a"}, {"v1": "a"}, "list of sentences"),
    ],
)
def test_coco_scores_reject_bad_input(
    candidates: dict[str, str], references: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(MetricsError, match=message):
        coco_caption_scores(candidates, references)


def test_coco_scores_need_java(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not java_available()
    with pytest.raises(MetricsError, match="need Java.*apt-get install default-jre-headless"):
        coco_caption_scores({"v1": "a cat"}, {"v1": ["a cat"]})


# --------------------------------------------------------------------------------------------------
# COCO caption metrics: known scores (Java)
# --------------------------------------------------------------------------------------------------

_DISTINCT = {
    "v1": "a red circle moves right",
    "v2": "a blue square jumps up",
    "v3": "a green triangle spins around",
}


@pytest.mark.java
def test_bleu_rouge_on_one_word_substitution(java: str, capfd: pytest.CaptureFixture[str]) -> None:
    # Case and punctuation vanish in the PTB tokenizer. n-gram matches are 4/5, 3/4, 2/3, 1/2 and
    # the lengths are equal, so there is no brevity penalty.
    scores = coco_caption_scores(
        {"v1": "A red circle moves LEFT."}, {"v1": ["a red circle moves right"]}, meteor=False
    )
    assert set(scores) == set(COCO_METRICS) - {"METEOR"}
    assert scores["BLEU-1"] == pytest.approx(0.8, abs=1e-4)
    assert scores["BLEU-2"] == pytest.approx(math.sqrt(0.8 * 0.75), abs=1e-4)
    assert scores["BLEU-3"] == pytest.approx((0.8 * 0.75 * 2 / 3) ** (1 / 3), abs=1e-4)
    assert scores["BLEU-4"] == pytest.approx((0.8 * 0.75 * 2 / 3 * 0.5) ** (1 / 4), abs=1e-4)
    # LCS 4 of 5 both ways: precision = recall = 0.8, so F(beta=1.2) = 0.8.
    assert scores["ROUGE-L"] == pytest.approx(0.8, abs=1e-9)
    # One item: every n-gram has idf log(1) - log(1) = 0, so CIDEr is 0 whatever the caption.
    assert scores["CIDEr"] == 0.0
    # Neither the scorers' prints nor the JVM's progress line reach the caller.
    captured = capfd.readouterr()
    assert captured.out == ""
    assert captured.err == ""


@pytest.mark.java
def test_cider_by_hand(java: str) -> None:
    # Three items, idf = log 3 for every n-gram but "a" (in every reference: idf 0). v2 and v3 are
    # perfect: cosine 1 for n = 1..4, score 10. v1 shares 3/4 unigrams (of non-zero weight),
    # 3/4 bigrams, 2/3 trigrams and 1/2 4-grams: 10 * mean = 10 * (0.75 + 0.75 + 2/3 + 0.5) / 4
    # = 20/3. The corpus score is the mean, (20/3 + 10 + 10) / 3 = 80/9.
    candidates = dict(_DISTINCT, v1="a red circle moves left")
    references = {key: [caption] for key, caption in _DISTINCT.items()}
    scores = coco_caption_scores(candidates, references, meteor=False)
    assert scores["CIDEr"] == pytest.approx(80 / 9, abs=1e-9)
    assert scores["ROUGE-L"] == pytest.approx((0.8 + 1 + 1) / 3, abs=1e-9)
    # Corpus BLEU-1 pools the counts: 14 of 15 unigrams match.
    assert scores["BLEU-1"] == pytest.approx(14 / 15, abs=1e-4)


@pytest.mark.java
def test_disjoint_and_empty_candidates_score_zero(java: str) -> None:
    scores = coco_caption_scores(
        {"v1": "x y z w", "v2": "", "v3": "."},
        {"v1": ["a red circle moves"], "v2": ["a blue square jumps"], "v3": ["a green thing"]},
        meteor=False,
    )
    for name, value in scores.items():
        assert value == pytest.approx(0.0, abs=1e-9), name


@pytest.mark.java
def test_multiple_references_stay_with_their_item(java: str) -> None:
    # Each candidate equals exactly one of its own references, which sit at different positions
    # among different numbers of references: any misalignment would drop ROUGE-L below 1.
    scores = coco_caption_scores(
        {"v1": "one two three", "v2": "four five six seven", "v3": "eight nine"},
        {
            "v1": ["zz top", "one two three"],
            "v2": ["four five six seven"],
            "v3": ["q", "r s", "eight nine"],
        },
        meteor=False,
    )
    assert scores["ROUGE-L"] == pytest.approx(1.0, abs=1e-9)
    assert scores["BLEU-1"] == pytest.approx(1.0, abs=1e-4)
    assert scores["BLEU-2"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.java
def test_tokenizer_matches_pycocoevalcap(java: str) -> None:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    sentences = [
        "A red circle, moving LEFT.",
        "It's a cat's toy -- isn't it?",
        "",
        "  two   spaces (and brackets) ... ",
        "héllo wörld!",
        "line\nbreak",
    ]
    reference = PTBTokenizer().tokenize({str(i): [{"caption": s}] for i, s in enumerate(sentences)})
    assert _ptb_tokenize(sentences) == [reference[str(i)][0] for i in range(len(sentences))]
    # Line breaks the reference wrapper would split on must not shift later sentences.
    assert _ptb_tokenize(["a\rb", "c\u2028d", "e"]) == ["a b", "c d", "e"]


@pytest.mark.java
@pytest.mark.slow
def test_perfect_captions_score_full_marks(java: str) -> None:
    # The only METEOR run in this file: its JVM takes about ten seconds to start.
    references = {key: [caption] for key, caption in _DISTINCT.items()}
    scores = coco_caption_scores(dict(_DISTINCT), references)
    assert list(scores) == list(COCO_METRICS)
    for order in range(1, 5):
        assert scores[f"BLEU-{order}"] == pytest.approx(1.0, abs=1e-6)
    assert scores["METEOR"] == pytest.approx(1.0, abs=1e-6)
    assert scores["ROUGE-L"] == pytest.approx(1.0, abs=1e-9)
    # Cosine 1 for every n = 1..4 (all captions have five words and differ): 10 * 1.
    assert scores["CIDEr"] == pytest.approx(10.0, abs=1e-9)


def test_wrong_runs_count_each_return_to_a_wrong_caption() -> None:
    allowed = {"a red circle", "a red circle grows"}
    good = ["a red circle", "a red circle", "a red circle grows", "a red circle grows"]
    assert wrong_runs(good, 0, 4, allowed) == 0
    guess = ["a red circle shrinks", "a red circle", "a red circle stays still",
             "a red circle stays still", "a red circle grows."]
    assert wrong_runs(guess, 0, 5, allowed) == 2
    assert wrong_runs(guess, 1, 2, allowed) == 0  # only the segment's frames count
    with pytest.raises(ValueError, match="empty or outside"):
        wrong_runs(guess, 3, 3, allowed)
    with pytest.raises(ValueError, match="not a string"):
        wrong_runs(guess, 0, 1, "a red circle")


def test_caption_changes_mark_frames_whose_caption_differs_from_the_last() -> None:
    assert caption_changes([]) == []
    assert caption_changes(["a cat", "A cat.", "a dog", "a cat"]) == [True, False, True, True]
