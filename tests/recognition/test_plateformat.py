"""Plate-format rules: pattern language, profiles, and picking the plate in a read."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.platetext import ALNUM, normalize
from edge.recognition.plateformat import (
    PatternError,
    PlateFormat,
    Scoring,
    apply_format,
    builtin_formats,
    load_format,
    make_format,
    parse_pattern,
)
from edge.types import CharChoice, OcrResult, TextCandidate


def read(*positions, candidates=()) -> OcrResult:
    """An OcrResult from positions: "A" (p 0.99), ("A", p), or (("1", 0.6), ("I", 0.3), ...)."""
    chars = []
    for pos in positions:
        if isinstance(pos, str):
            chars.append(CharChoice((pos,), (0.99,)))
        elif isinstance(pos[0], str):
            chars.append(CharChoice((pos[0],), (pos[1],)))
        else:
            chars.append(CharChoice(tuple(c for c, _ in pos), tuple(p for _, p in pos)))
    text = "".join(c.best for c in chars)
    conf = min((c.prob for c in chars), default=0.0)
    return OcrResult(text, conf, tuple(chars), tuple(candidates))


def read_text(text: str, p: float = 0.99) -> OcrResult:
    return read(*[((c, p),) for c in text])


# --------------------------------------------------------------------------- patterns


def test_pattern_symbols_and_classes():
    (p,) = parse_pattern("@#?[A-C]7")
    assert len(p) == 5
    assert p.slots[0] == frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert p.slots[1] == frozenset("0123456789")
    assert p.slots[2] == ALNUM
    assert p.slots[3] == frozenset("ABC")
    assert p.slots[4] == frozenset("7")
    assert p.matches("X5Z" + "B7") and not p.matches("X5ZD7") and not p.matches("X5ZB")


def test_repeats_expand_into_fixed_lengths():
    shapes = parse_pattern("@{1,2}#{1,4}")
    assert sorted(len(p) for p in shapes) == [2, 3, 3, 4, 4, 5, 5, 6]
    assert {len(p) for p in parse_pattern("[0-9A-C]{0,1}@")} == {1, 2}
    (mixed,) = parse_pattern("[0-9A-C]")
    assert mixed.slots[0] == frozenset("0123456789ABC")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("AB-123", "cannot parse"),
        ("@@ ##", "cannot parse"),
        ("[Z-A]#", "bad range"),
        ("[A-5]", "bad range"),
        ("[]##", "cannot parse|empty"),
        ("@{3,1}", "bad repeat"),
        ("", "empty"),
        ("@{0}", "only be empty"),
        ("?{1,16}?{1,16}?{1,16}?{1,16}", "too many"),
    ],
)
def test_bad_patterns_are_rejected_with_a_reason(pattern, message):
    with pytest.raises(PatternError, match=message):
        parse_pattern(pattern)


def test_builtin_profiles_load_and_match_their_plates():
    assert set(builtin_formats()) >= {"hk", "eu", "us", "br", "any"}
    hk = load_format("hk")
    assert isinstance(hk, PlateFormat) and hk.name == "hk"
    for plate in ("AB1234", "A1", "XY12", "1234", "BRUCE88"):
        assert hk.matches(plate), plate
    # I, O and Q are never issued; numbers have no leading zero.
    assert not hk.matches("AO1234")
    standard = [p for p in hk.patterns if p.group == "standard"]
    assert not any(p.matches("AO1234") for p in standard)
    assert not any(p.matches("AB0123") for p in standard)
    eu = load_format("eu")
    national = [p for p in eu.patterns if p.group == "national"]
    for plate in ("RK755AJ", "1B25790", "BZM2227", "WA56660", "BMW1234", "AB123CD",
                  "1234BCD", "AB12CDE", "ZG1234AB", "XX99XX"):  # fmt: skip
        assert any(p.matches(plate) for p in national), plate
    assert load_format("br").matches("ABC1D23")
    assert load_format("any").matches("Q")
    assert load_format("us").matches("7ABC123")


def test_unknown_profile_and_bad_files(tmp_path: Path):
    with pytest.raises(PatternError, match="unknown plate format"):
        load_format("atlantis")
    bad = tmp_path / "bad.toml"
    bad.write_text('patterns = ["@@-##"]\n')
    with pytest.raises(PatternError, match="cannot parse"):
        load_format(bad)
    weight = tmp_path / "weight.toml"
    weight.write_text('[[groups]]\nname = "x"\nweight = 2.0\npatterns = ["@#"]\n')
    with pytest.raises(PatternError, match="weight"):
        load_format(weight)
    scoring = tmp_path / "scoring.toml"
    scoring.write_text('patterns = ["@#"]\n[scoring]\nbogus = 1\n')
    with pytest.raises(PatternError, match="scoring"):
        load_format(scoring)


def test_custom_profile_file(tmp_path: Path):
    path = tmp_path / "fleet.toml"
    path.write_text(
        '[fleet]\n[[fleet.groups]]\nname = "cars"\nweight = 1.0\npatterns = ["FL###"]\n'
        "[fleet.scoring]\ndrop_edge = 0.3\n"
    )
    fmt = load_format(path)
    assert fmt.name == "fleet"
    assert fmt.scoring.drop_edge == 0.3
    assert fmt.matches("FL123") and not fmt.matches("FX123")
    got = apply_format(read_text("FL1Z3"), fmt)
    assert got is not None and got.text == "FL123"


def test_normalize():
    assert normalize("ab-12 3·x") == "AB123X"


# --------------------------------------------------------------------------- matching

BR = "br"  # only ABC1234 and ABC1D23: nothing else can absorb a misread
OLD_BR = make_format("old-br", [("cars", 1.0, ["@@@####"])])


def test_lookalikes_resolved_by_position():
    got = apply_format(read_text("A8C12S4"), OLD_BR)
    assert got is not None
    assert got.text == "ABC1254"
    assert got.pattern == "@@@####"
    # 0 and O both ways, each by its position.
    got = apply_format(read_text("0B1O"), make_format("t", [("a", 1.0, ["@@##"])]))
    assert got is not None and got.text == "OB10"


def test_the_pattern_needing_fewer_substitutions_wins():
    # Mercosur ABC1D23 fits A8C1Z34 with one substitution (8 -> B); ABC1234 needs two.
    got = apply_format(read_text("A8C1Z34"), BR)
    assert got is not None and got.text == "ABC1Z34"
    assert got.pattern == "@@@#@##"


def test_recogniser_alternative_beats_a_blind_lookalike():
    # Third position must be a letter: the model's own second choice is used.
    pos = (("4", 0.5), ("H", 0.45), ("A", 0.01))
    got = apply_format(read("A", "B", pos, "1", "2", "3", "4"), OLD_BR)
    assert got is not None and got.text == "ABH1234"
    assert got.char_confidences[2] == pytest.approx(0.45)


def test_confidence_reflects_substitutions():
    direct = apply_format(read_text("ABC1234"), OLD_BR)
    same_glyph = apply_format(read_text("ABC1O34"), OLD_BR)
    shape = apply_format(read_text("A8C1234"), OLD_BR)
    assert direct is not None and same_glyph is not None and shape is not None
    assert direct.confidence == pytest.approx(0.99)
    # 0/O are one glyph on plates: resolving them costs no confidence...
    assert same_glyph.text == "ABC1034" and same_glyph.confidence == pytest.approx(0.99)
    # ...but 8 for B is a real doubt.
    assert shape.text == "ABC1234" and shape.confidence < 0.5
    # Either way the substitution ranks below a direct read.
    assert shape.candidates[0].confidence < same_glyph.candidates[0].confidence
    assert same_glyph.candidates[0].confidence < direct.candidates[0].confidence


def test_junk_at_the_edges_is_dropped():
    eu = load_format("eu")
    # A country-band letter and a screw read at the ends, with low confidence.
    got = apply_format(read(("D", 0.6), *"RK755AJ", ((")", 0.9),), ("1", 0.5)), eu)
    assert got is not None and got.text == "RK755AJ"
    assert got.pattern == "@@###@@"


def test_dropping_costs_more_the_surer_the_character():
    hk = load_format("hk")
    # A standard mark has at most four digits. A sure fifth digit is kept, as a
    # personalised mark; a doubtful one (a screw head, say) is dropped.
    sure = apply_format(read(*"AB12345"), hk)
    assert sure is not None and sure.text == "AB12345"
    doubtful = apply_format(read(*"AB1234", ("5", 0.3)), hk)
    assert doubtful is not None and doubtful.text == "AB1234"
    assert doubtful.pattern == "[A-HJ-NPR-Z]{1,2}[1-9]#{0,3}"


def test_a_junk_character_between_plate_characters_is_dropped():
    fmt = make_format("t", [("a", 1.0, ["@@####"])])
    got = apply_format(read("A", "B", "1", ("7", 0.3), "2", "3", "4"), fmt)
    assert got is not None and got.text == "AB1234"


def test_personalised_shape_wins_only_without_a_cheap_regular_reading():
    hk = load_format("hk")
    vanity = apply_format(read_text("BRUCE"), hk)
    assert vanity is not None and vanity.text == "BRUCE"
    assert vanity.pattern == "[A-HJ-NPR-Z0-9]{2,8}"
    # One misread digit is cheaper than calling a standard plate personalised.
    standard = apply_format(read_text("AB12S4"), hk)
    assert standard is not None and standard.text == "AB1254"


def test_candidates_are_used_when_the_best_path_does_not_fit():
    # Best path lost a doubled digit; the beam kept it.
    result = read(
        *"ABC124",
        candidates=(TextCandidate("ABC1224", 0.5), TextCandidate("ABC124", 0.3)),
    )
    got = apply_format(result, BR)
    assert got is not None and got.text == "ABC1224"
    assert got.confidence == pytest.approx(0.5 ** (1 / 7))


def test_unlikely_candidates_are_ignored():
    result = read(
        *"ABC124",
        candidates=(TextCandidate("ABC124", 0.9), TextCandidate("ABC1224", 0.001)),
    )
    assert apply_format(result, BR) is None


def test_min_confidence_and_no_fit_give_none():
    assert apply_format(read_text("AB"), BR) is None
    assert apply_format(OcrResult("", 0.0, ()), BR) is None
    weak = read_text("ABC1234", p=0.4)
    assert apply_format(weak, BR) is not None
    assert apply_format(weak, BR, min_confidence=0.5) is None


def test_lower_case_and_punctuation_in_the_read_are_handled():
    result = read("a", "b", "c", "-", "1", "2", "3", "4")
    got = apply_format(result, BR)
    assert got is not None and got.text == "ABC1234"


def test_scoring_validation():
    with pytest.raises(PatternError):
        Scoring(drop_edge=0.0)
    with pytest.raises(PatternError):
        Scoring(lookalikes=(("0O", 1.5),))
    with pytest.raises(PatternError, match="no patterns"):
        PlateFormat("empty", ())


def test_a_sure_vanity_reading_is_not_lost_to_a_look_alike_serial():
    """A vanity 8FV480 fits the serial shape @@@### as BFV480 by an 8 -> B rewrite. The
    rewrite ranks first but leaves the reading too unsure to report; the plate as read,
    a look-alike twin of it that fits the vanity shape surely, is reported instead."""
    us = load_format("us")
    got = apply_format(read_text("8FV480"), us, min_confidence=0.5)
    assert got is not None and got.text == "8FV480" and got.confidence > 0.9
    assert got.candidates[0].text == "BFV480"  # still ranked first among the fits
    # Without a threshold the best fit stands, as before.
    assert apply_format(read_text("8FV480"), us).text == "BFV480"
    # A doubtful 8 is still rewritten and reported if sure enough.
    doubtful = read((("8", 0.55), ("B", 0.44)), "F", "V", "4", "8", "0")
    assert apply_format(doubtful, us, min_confidence=0.4).text == "BFV480"


def test_only_a_look_alike_twin_stands_in_for_an_unsure_best_fit():
    # The best fit of "ABC1284" under a one-shape profile rewrites 8 -> B; the only
    # other fit drops a character, which is no look-alike twin: nothing is reported.
    fmt = make_format("t", [("serial", 1.0, ["@@@#@##"]), ("short", 0.1, ["@@@###"])])
    assert apply_format(read_text("ABC1834"), fmt).text == "ABC1B34"
    assert apply_format(read_text("ABC1834"), fmt, min_confidence=0.5) is None


@pytest.mark.parametrize(
    ("read_as", "issued"),
    [("LOVEBB", "L0VEBB"), ("WHOAMI", "WH0AM1"), ("KINWOLLY", "K1NW0LLY"), ("AM1234", "AM1234")],
)
def test_hk_marks_come_out_as_issued_without_i_o_or_q(read_as, issued):
    """HK marks never use I, O or Q: a personalised plate that looks like LOVE BB is
    L0VEBB. The recogniser reads the glyphs as letters; the profile gives them back as
    the digits they are, at no cost in confidence (one glyph on the plate)."""
    got = apply_format(read_text(read_as), load_format("hk"), min_confidence=0.5)
    assert got is not None and got.text == issued
    assert got.confidence == pytest.approx(0.99)


def test_the_hk_profile_knows_the_cross_boundary_core():
    hk = load_format("hk")
    got = apply_format(read_text("Z1A2B"), hk)
    assert got is not None and got.text == "Z1A2B" and got.pattern == "Z[A-HJ-NP-Z0-9]{4}"
    # Z1234 and ZA123 are also standard HK marks; the Chinese characters decide.
    assert apply_format(read_text("ZA123"), hk).pattern == "[A-HJ-NPR-Z]{1,2}[1-9]#{0,3}"
