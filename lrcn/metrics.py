"""Caption metrics for per-frame video captioning.

The model emits one caption per sampled frame. The ground truth of a video is a list of segments
(``start`` inclusive, ``end`` exclusive, in sampled-frame indices), each with one or more reference
sentences; frames outside every segment have no target. This module scores such output three ways:

* frame level: exact match of the emitted caption against the references (``frame_exact_match``);
* latency: how many sampled frames after a segment starts the caption settles on a correct one
  (``caption_lag`` and ``lag_summary``);
* steadiness: runs of captions that are not allowed on a segment (``wrong_runs``) and how often
  the caption changes (``caption_changes``);
* sentence level: the standard COCO caption metrics BLEU-1..4, METEOR, ROUGE-L and CIDEr computed
  with ``pycocoevalcap`` (``coco_caption_scores``), which needs a Java runtime.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import shutil
import subprocess
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypedDict

_LOG = logging.getLogger(__name__)

#: The keys of ``coco_caption_scores``'s result, in report order.
COCO_METRICS: tuple[str, ...] = (
    "BLEU-1",
    "BLEU-2",
    "BLEU-3",
    "BLEU-4",
    "METEOR",
    "ROUGE-L",
    "CIDEr",
)

_JAVA_HINT = "install a Java runtime, e.g. `apt-get install default-jre-headless`"


class MetricsError(RuntimeError):
    """Captions cannot be scored: bad input, or the Java runtime the COCO metrics need is absent."""


class LagSummary(TypedDict):
    """Distribution of caption lags over segments; see ``lag_summary``."""

    segments: int
    unsettled: int
    median: float | None
    p90: float | None


# --------------------------------------------------------------------------------------------------
# Frame level
# --------------------------------------------------------------------------------------------------


def normalize_caption(text: str) -> str:
    """Canonical form of a caption for exact matching.

    Lower-cases, collapses runs of whitespace to one space, strips, and drops trailing periods.

    >>> normalize_caption("  A red   circle moves LEFT. ")
    'a red circle moves left'
    """
    collapsed = " ".join(text.lower().split())
    # The period is stripped after collapsing so that "moves left ." loses its dangling space too.
    return collapsed.rstrip(".").rstrip()


def frame_exact_match(
    predictions: Sequence[str], targets: Sequence[Collection[str] | None]
) -> tuple[int, int]:
    """Count frames whose caption equals one of the frame's references.

    ``targets[i]`` holds the reference sentences of frame ``i``, or ``None`` when the frame lies
    outside every segment; such frames are not counted. Captions and references are compared
    after ``normalize_caption``. Returns ``(correct, counted)``.

    Raises ``ValueError`` when the sequences differ in length or a target is an empty collection
    (use ``None`` for a frame without a target).

    >>> frame_exact_match(["a dog.", "a cat", "noise"], [{"A dog"}, {"a bird", "a fish"}, None])
    (1, 2)
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} frame targets")
    correct = 0
    counted = 0
    for index, (prediction, references) in enumerate(zip(predictions, targets, strict=True)):
        if references is None:
            continue
        counted += 1
        if _matches(prediction, references, where=f"frame {index}"):
            correct += 1
    return correct, counted


def caption_lag(
    predictions: Sequence[str], start: int, end: int, references: Collection[str]
) -> int | None:
    """Sampled frames from a segment's start until its caption settles on a correct one.

    ``predictions`` are the captions of every sampled frame of the video and the segment covers
    frames ``start`` (inclusive) to ``end`` (exclusive). The caption *settles* at the first frame
    from which it equals a reference (after ``normalize_caption``) on every remaining frame of the
    segment. The lag is that frame's offset from ``start``: ``0`` when the caption is correct on
    the whole segment, and a caption that flickers back to a wrong one restarts the count. The
    result is ``None`` when the caption is wrong on the segment's last frame, i.e. it never
    settles within the segment.

    Raises ``ValueError`` for an empty or out-of-range segment or an empty set of references.

    >>> captions = ["a dog", "a dog", "a cat", "a cat", "a cat"]
    >>> caption_lag(captions, 1, 5, {"a cat"})
    1
    >>> caption_lag(captions, 0, 2, {"a cat"}) is None
    True
    """
    if not 0 <= start < end <= len(predictions):
        raise ValueError(
            f"segment [{start}, {end}) is empty or outside the {len(predictions)} frames"
        )
    where = f"segment [{start}, {end})"
    # Walk backwards: the lag ends right after the last wrong frame of the segment.
    for index in range(end - 1, start - 1, -1):
        if not _matches(predictions[index], references, where=where):
            return None if index == end - 1 else index + 1 - start
    return 0


def wrong_runs(
    predictions: Sequence[str], start: int, end: int, allowed: Collection[str]
) -> int:
    """Maximal runs of consecutive frames in ``[start, end)`` whose caption is not allowed.

    ``allowed`` are the captions that may be said on the segment (its sentences, and what one
    frame of it shows). A caption that is wrong for three frames, right, then wrong again is two
    runs.

    >>> wrong_runs(["a cat", "a dog", "a dog", "a cat", "a cow"], 0, 5, {"a cat"})
    2
    """
    if not 0 <= start < end <= len(predictions):
        raise ValueError(
            f"segment [{start}, {end}) is empty or outside the {len(predictions)} frames"
        )
    runs, wrong_before = 0, False
    for index in range(start, end):
        wrong = not _matches(predictions[index], allowed, where=f"segment [{start}, {end})")
        runs += wrong and not wrong_before
        wrong_before = wrong
    return runs


def caption_changes(predictions: Sequence[str]) -> list[bool]:
    """Per frame, whether its caption differs from the previous frame's (the first frame's
    caption is a change: it replaces no caption).

    >>> caption_changes(["a cat", "a cat.", "a dog"])
    [True, False, True]
    """
    previous = None
    changes = []
    for prediction in predictions:
        caption = normalize_caption(prediction)
        changes.append(caption != previous)
        previous = caption
    return changes


def cue_runs(shown: Sequence[str]) -> list[tuple[int, int, str]]:
    """The subtitle cues that captions shown per frame make: ``(first, end, text)`` of each run
    of equal non-empty captions (``end`` exclusive), as the runtime's subtitle files hold them.

    >>> cue_runs(["a", "a", "", "b", "a"])
    [(0, 2, 'a'), (3, 4, 'b'), (4, 5, 'a')]
    """
    cues: list[tuple[int, int, str]] = []
    start = 0
    for index in range(1, len(shown) + 1):
        if index == len(shown) or normalize_caption(shown[index]) != normalize_caption(
                shown[start]):
            if normalize_caption(shown[start]):
                cues.append((start, index, shown[start]))
            start = index
    return cues


def spurious_cues(cues: Sequence[tuple[int, int, str]],
                  segments: Sequence[tuple[int, int, Collection[str]]]) -> int:
    """Cues whose text is true of no segment they overlap (``segments``: ``(first, end,
    allowed captions)`` in frame indices, ``end`` exclusive). A cue that overlaps no segment is
    spurious: it says something where nothing is annotated.

    >>> spurious_cues([(0, 3, "a cat"), (3, 4, "a dog"), (4, 9, "a cow")], [(0, 5, {"a cat"})])
    2
    """
    spurious = 0
    for first, end, text in cues:
        said = normalize_caption(text)
        spurious += not any(first < seg_end and seg_first < end
                            and said in {normalize_caption(a) for a in allowed}
                            for seg_first, seg_end, allowed in segments)
    return spurious


def first_match(predictions: Sequence[str], start: int, end: int,
                references: Collection[str]) -> int | None:
    """Frames from ``start`` until the first frame in ``[start, end)`` whose caption is one of
    ``references``, or None when none is.

    >>> first_match(["a", "b", "c"], 0, 3, {"c"}), first_match(["a"], 0, 1, {"z"})
    (2, None)
    """
    wanted = {normalize_caption(r) for r in references}
    for index in range(start, end):
        if normalize_caption(predictions[index]) in wanted:
            return index - start
    return None


def lag_summary(lags: Sequence[int | None]) -> LagSummary:
    """Median and 90th percentile of caption lags, counting unsettled segments as infinite.

    ``lags`` are ``caption_lag`` results, one per segment. A ``None`` (never settled) ranks above
    every finite lag; a percentile that falls among them is infinite and reported as ``None``, so
    the result always survives ``json.dumps(..., allow_nan=False)``. Finite percentiles
    interpolate linearly between ranks, like ``numpy.percentile``. ``unsettled`` counts the
    ``None`` entries; with no segments at all both percentiles are ``None`` and ``segments`` is 0.

    >>> lag_summary([0, 2, 4, None])
    {'segments': 4, 'unsettled': 1, 'median': 3.0, 'p90': None}
    """
    ordered = sorted(math.inf if lag is None else float(lag) for lag in lags)
    return {
        "segments": len(ordered),
        "unsettled": sum(lag is None for lag in lags),
        "median": _finite_or_none(_percentile(ordered, 0.5)),
        "p90": _finite_or_none(_percentile(ordered, 0.9)),
    }


def _matches(prediction: str, references: Collection[str], *, where: str) -> bool:
    if not references:
        raise ValueError(f"{where} has an empty set of references; use None for no target")
    # A bare string is a Collection[str] of its characters: almost surely a caller's mistake.
    if isinstance(references, str):
        raise ValueError(f"{where}: references must be a collection of sentences, not a string")
    wanted = normalize_caption(prediction)
    return any(normalize_caption(reference) == wanted for reference in references)


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    """Linear-interpolation percentile of sorted values that may end in ``inf``."""
    if not ordered:
        return math.nan
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    weight = position - low
    if weight == 0.0:
        return ordered[low]
    high = ordered[low + 1]
    # Interpolating towards inf is inf; doing it by arithmetic would give nan for weight 0.
    if math.isinf(high):
        return math.inf
    return ordered[low] + weight * (high - ordered[low])


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------------------------------
# COCO caption metrics
# --------------------------------------------------------------------------------------------------


def java_available() -> bool:
    """Whether a ``java`` executable is on ``PATH`` (METEOR and the PTB tokenizer need it).

    >>> isinstance(java_available(), bool)
    True
    """
    return shutil.which("java") is not None


def coco_caption_scores(
    candidates: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    *,
    meteor: bool = True,
) -> dict[str, float]:
    """Corpus-level COCO caption metrics of one candidate sentence per item.

    ``candidates`` maps an item id (a video, or a video segment) to the emitted sentence and
    ``references`` maps the same ids to one or more reference sentences. Sentences are tokenized
    with the Stanford PTB tokenizer shipped in ``pycocoevalcap`` (lower-cased, punctuation
    dropped), exactly as the COCO caption evaluation does, then scored with ``pycocoevalcap``'s
    BLEU, METEOR, ROUGE-L (beta 1.2) and CIDEr-D (sigma 6, scaled by 10). The keys of the result
    are ``COCO_METRICS``; ``meteor=False`` leaves out ``"METEOR"``, whose Java process takes about
    ten seconds to start.

    BLEU is aggregated over the corpus, METEOR is computed by the METEOR jar over all items, and
    ROUGE-L and CIDEr are means of per-item scores. CIDEr weighs n-grams by their inverse document
    frequency across the items' references, so it needs a corpus of several items: with a single
    item every weight is zero and so is CIDEr.

    Raises ``MetricsError`` when there is nothing to score, the two mappings' keys differ (naming
    the first id missing from either), an item has no reference sentence, or Java is missing or
    fails.

    >>> coco_caption_scores(  # doctest: +SKIP
    ...     {"v1": "a red circle moves left", "v2": "a blue square"},
    ...     {"v1": ["a red circle moves right"], "v2": ["a blue square", "a square"]},
    ... )["BLEU-1"]
    0.875
    """
    keys = _check_items(candidates, references)
    if not java_available():
        raise MetricsError(
            f"METEOR and the PTB tokenizer need Java, which is not on PATH: {_JAVA_HINT}"
        )

    # One tokenizer run for candidates and references together: each run costs a JVM start.
    sentences = [candidates[key] for key in keys]
    sentences += [sentence for key in keys for sentence in references[key]]
    tokens = _ptb_tokenize(sentences)
    res = {key: [tokens[index]] for index, key in enumerate(keys)}
    gts: dict[str, list[str]] = {}
    cursor = len(keys)
    for key in keys:
        count = len(references[key])
        gts[key] = tokens[cursor : cursor + count]
        cursor += count

    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    scores: dict[str, float] = {}
    bleu, _ = _quietly(Bleu(4).compute_score, gts, res)
    for order, value in enumerate(bleu, start=1):
        scores[f"BLEU-{order}"] = float(value)
    if meteor:
        scores["METEOR"] = _meteor(gts, res)
    rouge, _ = _quietly(Rouge().compute_score, gts, res)
    scores["ROUGE-L"] = float(rouge)
    cider, _ = _quietly(Cider().compute_score, gts, res)
    scores["CIDEr"] = float(cider)
    _LOG.debug("COCO caption scores over %d items: %s", len(keys), scores)
    return scores


def _check_items(
    candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> list[str]:
    """Validate the scorer input and return the item ids in candidate order."""
    if not candidates and not references:
        raise MetricsError("no captions to score: candidates and references are empty")
    for key in candidates:
        if key not in references:
            raise MetricsError(f"item {key!r} has a candidate but no references")
    for key in references:
        if key not in candidates:
            raise MetricsError(f"item {key!r} has references but no candidate")
    for key in candidates:
        if not isinstance(candidates[key], str):
            raise MetricsError(f"item {key!r}: the candidate must be one sentence (a string)")
        sentences = references[key]
        # A bare string would be scored as one-character references.
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise MetricsError(f"item {key!r}: references must be a list of sentences")
        if len(sentences) == 0:
            raise MetricsError(f"item {key!r} has no reference sentence")
    return list(candidates)


def _ptb_tokenize(sentences: Sequence[str]) -> list[str]:
    """Tokenize sentences like ``pycocoevalcap``'s ``PTBTokenizer``, one result per sentence.

    Same jar, flags and punctuation filter as ``PTBTokenizer.tokenize``, but the text goes through
    a pipe instead of a temporary file inside site-packages (which may be read-only), the JVM's
    progress line on stderr is kept from the caller's terminal, and every line break a sentence
    may hold is flattened so that output lines stay aligned with the input.
    """
    from pycocoevalcap.tokenizer import ptbtokenizer

    jar = os.path.join(
        os.path.dirname(os.path.abspath(ptbtokenizer.__file__)),
        ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR,
    )
    command = [
        "java",
        "-cp",
        jar,
        "edu.stanford.nlp.process.PTBTokenizer",
        "-preserveLines",
        "-lowerCase",
    ]
    # str.splitlines knows every line break Java might honour (\r, \x0b, \x85, \u2028, ...).
    text = "".join(" ".join(sentence.splitlines()) + "\n" for sentence in sentences)
    try:
        done = subprocess.run(command, input=text.encode("utf-8"), capture_output=True, check=False)
    except OSError as error:
        raise MetricsError(f"cannot run the PTB tokenizer ({error}); {_JAVA_HINT}") from error
    if done.returncode != 0:
        raise MetricsError(
            f"the PTB tokenizer failed (exit {done.returncode}): {_last_line(done.stderr)}"
        )
    lines = done.stdout.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != len(sentences):
        raise MetricsError(
            f"the PTB tokenizer returned {len(lines)} lines for {len(sentences)} sentences"
        )
    punctuation = set(ptbtokenizer.PUNCTUATIONS)
    return [
        " ".join(word for word in line.rstrip().split(" ") if word not in punctuation)
        for line in lines
    ]


def _meteor(gts: dict[str, list[str]], res: dict[str, list[str]]) -> float:
    """METEOR 1.5 over all items, stopping the scorer's JVM before returning."""
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        scorer = Meteor()
    except OSError as error:
        raise MetricsError(f"cannot start METEOR ({error}); {_JAVA_HINT}") from error
    process = scorer.meteor_p
    try:
        score, _ = _quietly(scorer.compute_score, gts, res)
    except (OSError, ValueError) as error:
        # A dead JVM shows up as a broken pipe or as an empty line that float() rejects.
        process.kill()
        process.wait()
        raise MetricsError(f"METEOR failed: {_last_line(process.stderr.read())}") from error
    finally:
        # Meteor only stops its JVM in __del__, which may run late or never; do it now. Closing
        # stdin may flush into a dead process, which must not mask the error being raised.
        with contextlib.suppress(OSError):
            process.stdin.close()
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()
    return float(score)


def _quietly(function: Any, *args: Any) -> Any:
    """Call a ``pycocoevalcap`` scorer with its progress prints sent to the debug log."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = function(*args)
    if buffer.getvalue().strip():
        _LOG.debug(
            "%s printed: %s", getattr(function, "__qualname__", function), buffer.getvalue().strip()
        )
    return result


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", errors="replace").strip().splitlines()
    return lines[-1] if lines else "no message"
