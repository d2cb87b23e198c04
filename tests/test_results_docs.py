"""docs/RESULTS.md is a current document: short, no withdrawn sections, every link resolving, and its followable-behaviour
tables exactly what `reproduce/followable_tables.py` makes from the committed comparison archive."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "RESULTS.md"


def test_results_is_short_and_holds_no_withdrawn_section():
    lines = RESULTS.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 700, f"docs/RESULTS.md has {len(lines)} lines; move superseded text to docs/history.md"
    headings = [line for line in lines if line.startswith("#")]
    stale = [h for h in headings if re.search(r"withdrawn|superseded|earlier run|re-read", h, re.IGNORECASE)]
    assert not stale, f"withdrawn or superseded sections belong in docs/history.md: {stale}"


def test_every_relative_link_in_results_and_readme_resolves():
    missing = []
    for doc in (RESULTS, ROOT / "README.md", ROOT / "docs" / "history.md", ROOT / "reproduce" / "README.md", ROOT / "docs" / "engineering.md",
                ROOT / "docs" / "methods.md", ROOT / "docs" / "cli.md"):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            if not (doc.parent / target).exists():
                missing.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not missing, f"links to files that do not exist: {missing}"


def test_followable_tables_are_made_from_the_committed_archive():
    made = subprocess.run([sys.executable, str(ROOT / "reproduce" / "followable_tables.py")], capture_output=True,
                          text=True, check=True, cwd=ROOT).stdout
    committed = (ROOT / "docs" / "compare" / "followable_summary.md").read_text(encoding="utf-8")
    assert made == committed, "docs/compare/followable_summary.md is stale: rerun reproduce/followable_tables.py"
    results = RESULTS.read_text(encoding="utf-8")
    for line in made.splitlines():
        if line.startswith("| ") and not line.startswith("| method"):
            assert line in results, f"RESULTS §1 lacks the archived row {line[:80]}…"


def test_recipe_tables_are_made_from_the_committed_archive():
    """The answer per budget (RESULTS §1, the paper's recipe and three KL budgets) is what `comparison_recipes.sh` makes."""
    made = subprocess.run([sys.executable, str(ROOT / "reproduce" / "followable_tables.py"), "--runs", "recipes"], capture_output=True,
                          text=True, check=True, cwd=ROOT).stdout
    committed = (ROOT / "docs" / "compare" / "recipes_summary.md").read_text(encoding="utf-8")
    assert made == committed, "docs/compare/recipes_summary.md is stale: rerun reproduce/followable_tables.py --runs recipes"
    runs = (ROOT / "docs" / "compare" / "archive" / "smollm2-135m-instruct").glob("*/compare/recipes-seed*-kl*")
    budgets = {(run.parents[1].name, run.name.rsplit("-kl", 1)[1]) for run in runs}
    assert budgets and made.count("### ") == len(budgets)  # one table per behaviour and budget archived
    results = RESULTS.read_text(encoding="utf-8")
    for line in made.splitlines():
        if line.startswith("| ") and not line.startswith("| method"):
            assert line in results, f"RESULTS §1 lacks the archived recipe row {line[:80]}…"


def test_gemma_tables_are_made_from_the_committed_archive():
    """The second model's answer (RESULTS §10, Gemma-3-270M tone) is what `comparison_gemma.sh` makes; RESULTS holds its
    answer table (the strengths and costs stay in the summary)."""
    made = subprocess.run([sys.executable, str(ROOT / "reproduce" / "followable_tables.py"), "--model", "gemma-3-270m", "tone"],
                          capture_output=True, text=True, check=True, cwd=ROOT).stdout
    committed = (ROOT / "docs" / "compare" / "gemma_tone_summary.md").read_text(encoding="utf-8")
    assert made == committed, "docs/compare/gemma_tone_summary.md is stale: rerun reproduce/followable_tables.py --model gemma-3-270m tone"
    answer_table = made.split("\n\n")[1]  # heading, answer table, strengths and costs
    rows = [line for line in answer_table.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert rows and "dW (lora)" in rows[0]
    results = RESULTS.read_text(encoding="utf-8")
    for line in rows:
        assert line in results, f"RESULTS §10 lacks the archived Gemma row {line[:80]}…"
