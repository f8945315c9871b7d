"""Reading segments and letters out of model text: the shapes models write, and what to drop."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from videovlm.text import extract_choice, parse_segments, parse_time


def _clock(t: int, style: str) -> str:
    h, rem = divmod(t, 3600)
    m, s = divmod(rem, 60)
    if style == "hms" or h:
        return f"{h}:{m:02d}:{s:02d}"
    if style == "mmss":
        return f"{m:02d}:{s:02d}"
    if style == "mss":
        return f"{m}:{s:02d}"
    return f"{t}s"


RANGE_SHAPES = [
    "{a} - {b}: {text}",
    "{a}-{b} {text}",
    "[{a} - {b}] {text}",
    "({a}–{b}) {text}",
    "- {a} - {b}: {text}",
    "* **{a} - {b}**: {text}",
    "{n}. {a} to {b}: {text}",
    "From {a} to {b}, {text}",
    "Between {a} and {b}: {text}",
    "{a} --> {b}: {text}",
    "Scene {n} ({a} - {b}): {text}",
    "**Shot {n}: {a}–{b}** {text}",
    "### {a} - {b}\n{text}",
    "{a} - {b} | {text}",
]
START_SHAPES = [
    "{a}: {text}",
    "[{a}] {text}",
    "- {a}: {text}",
    "- [{a}]: {text}",
    "At {a}, {text}",
    "{n}) {a} - {text}",
    "**{a}** {text}",
]
WORDS = ("a", "man", "walks", "his", "dog", "past", "red", "cars", "while", "a", "cyclist",
         "waits", "at", "the", "corner")


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))).capitalize() + "."


@pytest.mark.parametrize("seed", range(60))
def test_ranges_in_any_shape_parse_back_exactly(seed: int) -> None:
    rng = random.Random(seed)
    duration = rng.choice([10, 95, 600, 4000])
    cuts = sorted(rng.sample(range(duration), rng.randint(1, 6)))
    bounds = [*cuts, duration]
    style = rng.choice(["mmss", "mss", "hms", "sec"])
    shape = rng.choice(RANGE_SHAPES)
    truth, lines = [], [rng.choice(["", "Here is what happens:", "Sure! The timeline:"])]
    for n, (a, b) in enumerate(itertools.pairwise(bounds), 1):
        text = _text(rng)
        truth.append((float(a), float(b), text))
        lines.append(shape.format(a=_clock(a, style), b=_clock(b, style), text=text, n=n))
    segs, parsed = parse_segments("\n".join(lines), duration)
    assert parsed
    assert [(s.start_s, s.end_s, s.text) for s in segs] == truth


@pytest.mark.parametrize("seed", range(60))
def test_start_only_lists_end_at_the_next_start(seed: int) -> None:
    rng = random.Random(1000 + seed)
    duration = rng.choice([12, 75, 3700])
    starts = sorted(rng.sample(range(duration), rng.randint(1, 7)))
    style = rng.choice(["mmss", "mss", "hms"])
    shape = rng.choice(START_SHAPES)
    sep = "\n" if not shape.startswith("At") else rng.choice(["\n", " "])
    texts = [_text(rng) for _ in starts]
    body = sep.join(shape.format(a=_clock(a, style), text=t, n=i + 1)
                    for i, (a, t) in enumerate(zip(starts, texts, strict=True)))
    segs, parsed = parse_segments(body, duration)
    assert parsed
    ends = [*starts[1:], duration]
    assert [(s.start_s, s.end_s, s.text) for s in segs] == [
        (float(a), float(b), t) for a, b, t in zip(starts, ends, texts, strict=True)
    ]


def test_out_of_order_segments_are_ordered_and_impossible_ones_dropped() -> None:
    text = (
        "00:06 - 00:09: third\n"
        "00:00 - 00:03: first\n"
        "00:05 - 00:02: backwards, dropped\n"
        "00:42 - 00:50: after the end, dropped\n"
        "00:03 - 00:75: impossible seconds, dropped\n"
        "00:03 - 00:06: second\n"
        "00:08 - 00:30: runs past the end, clamped\n"
    )
    segs, parsed = parse_segments(text, 10.0)
    assert parsed
    assert [(s.start_s, s.end_s, s.text) for s in segs] == [
        (0.0, 3.0, "first"),
        (3.0, 6.0, "second"),
        (6.0, 9.0, "third"),
        (8.0, 10.0, "runs past the end, clamped"),
    ]


def test_multi_line_descriptions_are_joined_and_preamble_dropped() -> None:
    text = "The video shows a street.\n\n00:00 - 00:04:\n  A car arrives\n  and parks.\n\n" \
           "00:04 - 00:08: It leaves."
    segs, parsed = parse_segments(text, 8.0)
    assert parsed
    assert [(s.start_s, s.end_s, s.text) for s in segs] == [
        (0.0, 4.0, "A car arrives and parks."), (4.0, 8.0, "It leaves.")]


@pytest.mark.parametrize("text", [
    "A man rides a bike down a hill.",
    "10 seconds later, nothing much happens.",
    "",
    "00:30 - 00:40: everything is after the end",
    "It happens from 2 to 5 o'clock.",
])
def test_nothing_timed_gives_one_spanning_segment_flagged(text: str) -> None:
    segs, parsed = parse_segments(text, 20.0)
    assert not parsed
    assert len(segs) == 1
    assert (segs[0].start_s, segs[0].end_s, segs[0].text) == (0.0, 20.0, text.strip())


def test_times_mid_sentence_are_description_not_structure() -> None:
    segs, parsed = parse_segments("00:00 - 00:05: The dog appears at 00:03 and barks.", 5.0)
    assert parsed
    assert [(s.start_s, s.end_s, s.text) for s in segs] == [
        (0.0, 5.0, "The dog appears at 00:03 and barks.")]


def test_fractional_and_hour_times() -> None:
    assert parse_time("1:02:03") == 3723.0
    assert parse_time("00:12.5") == 12.5
    assert parse_time("12.5 sec") == 12.5
    assert parse_time("00:61") is None
    assert parse_time("1:75:00") is None
    segs, _ = parse_segments("0:01.5 - 0:02.25: quick cut", 3.0)
    assert (segs[0].start_s, segs[0].end_s) == (1.5, 2.25)


def test_segments_cover_only_the_video_for_random_garbage() -> None:
    rng = random.Random(7)
    alphabet = "0123456789:- .[]()\nabcs->"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        duration = rng.uniform(0.5, 100)
        segs, parsed = parse_segments(text, duration)
        assert segs
        starts = [s.start_s for s in segs]
        assert starts == sorted(starts)
        for s in segs:
            assert 0.0 <= s.start_s < s.end_s <= duration + 1e-6 or not parsed


OPTIONS = ["a red car", "a blue bicycle", "a dog", "nothing moves"]


@pytest.mark.parametrize(("text", "letter"), [
    ("B", "B"),
    ("B.", "B"),
    ("(B)", "B"),
    ("**C**", "C"),
    ("Answer: B", "B"),
    ("answer: (D)", "D"),
    ("B) a blue bicycle", "B"),
    ("(A) a red car", "A"),
    ("C. a dog", "C"),
    ("The answer is B.", "B"),
    ("The correct answer is (C) because it barks.", "C"),
    ("I would pick option D.", "D"),
    ("It is a blue bicycle.", "B"),
    ("blue bicycle", "B"),
    ("There is a dog in the frame", "C"),
    ("I believe it's (A), the car.", "A"),
])
def test_extract_choice_finds_the_committed_letter(text: str, letter: str) -> None:
    assert extract_choice(text, OPTIONS) == letter


def readme_answer_table() -> list[tuple[str, str | None]]:
    """The answer rule's table in the README (between its answer-rule-table markers): the
    documentation and this test are one table."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- answer-rule-table -->")[1].split("<!-- /answer-rule-table -->")[0]
    rows = [line.strip("|").split("|") for line in table.strip().splitlines()[2:]]
    return [(reply.strip().strip("`"), None if letter.strip() == "unparseable"
             else letter.strip()) for reply, letter in rows]


@pytest.mark.parametrize(("text", "letter"), readme_answer_table())
def test_the_readme_answer_rule_table(text: str, letter: str | None) -> None:
    assert extract_choice(text, ["red", "green", "blue", "black"]) == letter


def test_the_readme_table_has_the_rows_it_promises() -> None:
    replies = [r for r, _ in readme_answer_table()]
    assert len(replies) >= 15 and "**Answer:** B" in replies and "A or B" in replies


@pytest.mark.parametrize("text", [
    "",
    "a man walks",  # lowercase article, not option A
    "Answer: E",  # not an option
    "xq zz wobble",
    "a red car and a dog",  # two options named, neither longer: no commitment
    "A. a red car\nB. a blue bicycle",  # the options listed back: no commitment
    "(A) or (C)",
])
def test_extract_choice_is_none_without_a_commitment(text: str) -> None:
    assert extract_choice(text, OPTIONS) is None


def test_extract_choice_prefers_the_longest_matching_option() -> None:
    assert extract_choice("the red car", ["red", "the red car", "blue"]) == "B"


@pytest.mark.parametrize("seed", range(40))
def test_extract_choice_property_letters_in_wrappers(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(2, 6)
    options = [f"option text {i} {rng.choice(WORDS)}" for i in range(n)]
    letter = "ABCDEF"[rng.randrange(n)]
    wrapper = rng.choice(["{L}", "({L})", "{L}.", "Answer: {L}", "The answer is {L}.",
                          "{L}) {T}", "{L}: {T}", "Answer: ({L}) {T}", "**{L}**"])
    text = wrapper.format(L=letter, T=options["ABCDEF".index(letter)])
    assert extract_choice(text, options) == letter
