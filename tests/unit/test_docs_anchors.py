"""Every ``FAITHFULNESS.md#anchor`` the code, the zoo, the docs or the tests cite is a heading of
docs/FAITHFULNESS.md, under GitHub's anchor rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
FAITHFULNESS = ROOT / "docs" / "FAITHFULNESS.md"
# "FAITHFULNESS.md#test-pipeline, #metrics": the anchors after the first share its file.
CITATION = re.compile(r"FAITHFULNESS\.md(#[\w-]+(?:,\s*#[\w-]+)*)")


def github_anchor(heading: str) -> str:
    """GitHub's slug of a heading: lower case, punctuation other than '-' and '_' dropped,
    each space a '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(markdown: str) -> list[str]:
    """The ATX headings of ``markdown`` outside fenced code blocks."""
    found, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6} +(.+?) *#* *$", line)):
            found.append(match.group(1))
    return found


def citations() -> dict[str, set[str]]:
    """anchor -> the files (relative to the repository) that cite it."""
    files = [*(ROOT / "isaseg_cli").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    files += [ROOT / "model_zoo.yaml", ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    cited: dict[str, set[str]] = {}
    for path in files:
        if path == Path(__file__):  # its examples are not citations
            continue
        for match in CITATION.finditer(path.read_text(encoding="utf-8")):
            for anchor in re.findall(r"#([\w-]+)", match.group(1)):
                cited.setdefault(anchor, set()).add(str(path.relative_to(ROOT)))
    return cited


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Tolerances, and which CPU", "tolerances-and-which-cpu"),
        ("Zoo and checkpoint names", "zoo-and-checkpoint-names"),
        ("Multi-scale and flip views", "multi-scale-and-flip-views"),
        ("`whole` (mmseg's EncoderDecoder)", "whole-mmsegs-encoderdecoder"),
    ],
)
def test_github_anchor_rules(heading: str, anchor: str) -> None:
    assert github_anchor(heading) == anchor


def test_headings_skip_code_blocks() -> None:
    text = "# Title\n```\n# not a heading\n```\n## Part two ##\n"
    assert headings(text) == ["Title", "Part two"]


def test_the_citation_pattern_reads_lists_of_anchors() -> None:
    text = "(docs/FAITHFULNESS.md#test-pipeline, #metrics), see FAITHFULNESS.md#loss."
    found = [re.findall(r"#([\w-]+)", m.group(1)) for m in CITATION.finditer(text)]
    assert found == [["test-pipeline", "metrics"], ["loss"]]


def test_every_cited_anchor_is_a_heading() -> None:
    anchors = [github_anchor(heading) for heading in headings(FAITHFULNESS.read_text("utf-8"))]
    assert len(anchors) == len(set(anchors)), "two headings share an anchor"
    cited = citations()
    # The code cites these today (a guard against a pattern that silently matches nothing).
    assert {"metrics", "training-schedule", "datasets-and-labels"} <= cited.keys()
    missing = {anchor: sorted(paths) for anchor, paths in cited.items() if anchor not in anchors}
    assert not missing, f"cited anchors without a heading in docs/FAITHFULNESS.md: {missing}"


def test_the_reference_behaviours_each_have_their_heading() -> None:
    anchors = {github_anchor(heading) for heading in headings(FAITHFULNESS.read_text("utf-8"))}
    assert {
        "test-pipeline", "pre-processing", "keep-ratio-rounding", "head-padding", "slide-windows",
        "multi-scale-and-flip-views", "model", "checkpoints", "tolerances-and-which-cpu",
        "zoo-and-checkpoint-names", "pretrained-weights-and-initialisation",
        "datasets-and-labels", "training-pipeline", "training-schedule", "loss", "metrics",
    } <= anchors  # fmt: skip
