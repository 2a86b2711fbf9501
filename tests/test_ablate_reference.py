"""Chapter 05's ablation section never says "not found": without an ablation of its own the run
shows the committed reference table, labelled as a reference with its date, machine and command,
each quality number beside a real-mask one; and that table is the README's lever table."""

from __future__ import annotations

import json
import re
from pathlib import Path

from maskdet.evaluation import ablate

README = Path(__file__).resolve().parents[1] / "README.md"


def test_without_an_ablation_the_reference_is_shown_and_labelled(tmp_path):
    table = ablate.table_or_reference(tmp_path / "ablations")
    ref = table["reference"]
    assert table["notes"][0].startswith("REFERENCE, not this run")
    assert str(tmp_path / "ablations" / "ablations.json") in table["notes"][0]
    assert ref["date"] in table["notes"][1] and ref["machine"] in table["notes"][1]
    assert "python -m maskdet" in table["notes"][1]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", ref["date"])
    for row in table["summary"]:  # every quality number beside a real-mask one
        assert 0.5 < row["real_auc_mean"] <= 1 and 0 < row["real_recall_mean"] <= 1
        assert "test_auc_mean" in row and "real_specificity_mean" in row
    assert all(r["status"] == "ok" and "real_auc" in r for r in table["runs"])


def test_a_run_with_its_own_ablation_shows_it(tmp_path):
    own = {"preset": "smoke", "notes": [], "runs": [], "summary": [{"experiment": "baseline"}]}
    (tmp_path / "ablations.json").write_text(json.dumps(own))
    assert ablate.table_or_reference(tmp_path) == own


def test_the_reference_is_the_readme_lever_table():
    """Each reference row's numbers, in order, are those of its row in the README's table."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("**Stage 02 levers, one seed each**") :]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| ---")) + 1
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    rows = lines[start:end]
    readme = [
        [float(x) for x in re.findall(r"\b[01]\.\d{3,4}\b", "|".join(r.split("|")[2:]))]
        for r in rows
    ]
    runs = json.loads(ablate.REFERENCE_TABLE.read_text())["runs"]
    keys = ("test_auc", "real_auc_tight", "real_auc_1.25x", "real_auc", "real_auc_loose")
    ours = [[r[k] for k in (*keys, "real_recall", "real_specificity")] for r in runs]
    assert readme == ours


def test_the_figure_puts_real_auc_first_and_says_reference(tmp_path):
    from maskdet.evaluation.figures import summary_figure

    table = ablate.table_or_reference(tmp_path)
    fig = summary_figure(table)
    assert [ax.get_xlabel() for ax in fig.axes] == ["real AUC", "synthetic test AUC"]
    assert len(fig.axes[0].get_yticks()) == len(table["runs"])
    assert "reference ablation, not this run" in fig._suptitle.get_text()
