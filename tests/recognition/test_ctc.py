"""CTC decoding on hand-made probability matrices."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from edge.recognition.ocr import ctc

CHARSET = ["", "A", "B", "O", "0", "1", "I"]
IDX = {c: i for i, c in enumerate(CHARSET) if c}


def frames(*rows: dict[str, float]) -> np.ndarray:
    """A (T, C) matrix: each row gives some classes' probabilities, the blank the rest."""
    out = np.zeros((len(rows), len(CHARSET)), np.float32)
    for t, row in enumerate(rows):
        for ch, p in row.items():
            out[t, IDX[ch]] = p
        out[t, 0] = 1.0 - sum(row.values())
    return out


def brute_force(probs: np.ndarray, charset) -> dict[str, float]:
    """P(string) by summing every frame path: the definition the decoders approximate."""
    totals: dict[str, float] = {}
    for path in itertools.product(range(probs.shape[1]), repeat=probs.shape[0]):
        p = math.prod(float(probs[t, c]) for t, c in enumerate(path))
        collapsed = [c for k, c in enumerate(path) if c != 0 and (k == 0 or path[k - 1] != c)]
        text = "".join(charset[c] for c in collapsed)
        totals[text] = totals.get(text, 0.0) + p
    return totals


def test_greedy_collapses_repeats_and_needs_a_blank_to_double():
    probs = frames({"A": 0.9}, {"A": 0.8}, {}, {"A": 0.7}, {"B": 0.6}, {"B": 0.95})
    chars = ctc.greedy_decode(probs, CHARSET)
    assert "".join(c.best for c in chars) == "AAB"
    # A character's probability is the best frame of its run.
    assert [round(c.prob, 3) for c in chars] == [0.9, 0.7, 0.95]


def test_greedy_keeps_alternatives_ranked_and_skips_the_blank():
    probs = frames({"O": 0.55, "0": 0.3, "B": 0.05})
    (choice,) = ctc.greedy_decode(probs, CHARSET, topk=3)
    assert choice.chars == ("O", "0", "B")
    assert choice.probs == pytest.approx((0.55, 0.3, 0.05))
    assert "" not in choice.chars
    (only,) = ctc.greedy_decode(probs, CHARSET, topk=1)
    assert only.chars == ("O",)


def test_alternatives_come_from_the_whole_run():
    # The 0 is strongest in the run's second frame, where O is weaker.
    probs = frames({"O": 0.8, "0": 0.1}, {"O": 0.5, "0": 0.4})
    (choice,) = ctc.greedy_decode(probs, CHARSET)
    assert choice.chars[:2] == ("O", "0")
    assert choice.probs[:2] == pytest.approx((0.8, 0.4))


def test_all_blank_reads_nothing():
    probs = frames({}, {"A": 0.2}, {})
    assert ctc.greedy_decode(probs, CHARSET) == ()
    result = ctc.decode(probs, CHARSET)
    assert result.text == ""
    assert result.confidence == 0.0
    assert result.chars == ()


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match=r"\(T, C\)"):
        ctc.best_path(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(T, C\)"):
        ctc.beam_search(np.zeros(5, np.float32), CHARSET)


def test_string_probability_matches_brute_force():
    rng = np.random.default_rng(3)
    small = ["", "A", "B"]
    probs = rng.random((4, 3)).astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    expected = brute_force(probs, small)
    for text, p in expected.items():
        labels = [small.index(c) for c in text]
        assert ctc.string_probability(probs, labels) == pytest.approx(p, rel=1e-9), text


def test_beam_finds_a_string_the_best_path_misses():
    # Each frame is most likely blank, yet "A" over both frames is likelier than "".
    probs = frames({"A": 0.4, "B": 0.1}, {"A": 0.4, "B": 0.1})
    assert ctc.greedy_decode(probs, CHARSET) == ()
    top = ctc.beam_search(probs, CHARSET, beam_width=8, top_n=3)
    assert top[0].text == "A"
    # AA, A_, _A: 0.16 + 0.2 + 0.2
    assert top[0].confidence == pytest.approx(0.56, abs=1e-6)
    assert [c.text for c in top[:2]] == ["A", ""]


def test_beam_probabilities_match_brute_force():
    rng = np.random.default_rng(7)
    small = ["", "A", "B"]
    probs = rng.random((5, 3))
    probs /= probs.sum(axis=1, keepdims=True)
    expected = brute_force(probs, small)
    for cand in ctc.beam_search(probs, small, beam_width=64, top_n=5, prune=0.0):
        assert cand.confidence == pytest.approx(expected[cand.text], rel=1e-6)
    best = max(expected, key=expected.__getitem__)
    assert ctc.beam_search(probs, small, beam_width=64, prune=0.0)[0].text == best


def test_decode_reports_text_chars_and_sorted_candidates():
    probs = frames({"A": 0.9}, {}, {"1": 0.6, "I": 0.35}, {}, {"B": 0.95})
    result = ctc.decode(probs, CHARSET)
    assert result.text == "A1B"
    assert len(result.chars) == 3
    assert result.chars[1].chars[:2] == ("1", "I")
    assert result.confidence == pytest.approx(0.6)
    texts = [c.text for c in result.candidates]
    assert "A1B" in texts and "AIB" in texts
    confs = [c.confidence for c in result.candidates]
    assert confs == sorted(confs, reverse=True)


def test_restriction_sends_other_classes_to_the_blank():
    model = ["", "A", "a", "·", "B", "中"]
    r = ctc.restrict_charset(model, "AB", fold={"a": "A"})
    assert r.charset == ("", "A", "B")
    probs = np.array([[0.1, 0.2, 0.3, 0.4, 0.0, 0.0], [0.0, 0.1, 0.0, 0.0, 0.3, 0.6]], np.float32)
    out = ctc.apply_restriction(probs, r)
    assert out.sum(axis=1) == pytest.approx([1.0, 1.0])
    # The lower-case a joins A; the separator dot and the CJK glyph become blank.
    assert out[0] == pytest.approx([0.5, 0.5, 0.0])
    assert out[1] == pytest.approx([0.6, 0.1, 0.3])
    # Plain renormalising instead would turn the CJK frame into a B.
    renorm = ctc.apply_restriction(probs, r, rest_to_blank=False)
    assert renorm[1].argmax() == 2
    assert out[1].argmax() == 0
