"""The prediction tables: a table on a terminal that fits it, else tab-separated lines."""

from __future__ import annotations

from cnnkit.cli.tables import print_label_sets
from cnnkit.tasks.multi_label import LabelSet


def _sets() -> list[LabelSet]:
    cut = {"cat": 0.5, "dog": 0.4}
    return [LabelSet("a.png", [("cat", 0.9), ("dog", 0.45)], [("cat", 0.9), ("dog", 0.45)], cut),
            LabelSet("b.png", [], [("dog", 0.3), ("cat", 0.1)], cut)]


def test_label_sets_print_as_tab_separated_lines_off_a_terminal(capsys) -> None:
    print_label_sets(_sets(), errors={"c.png": "not an image"},
                     order=["c.png", "a.png", "b.png"])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == "path\tlabels (at each label's threshold)\ttop"
    assert lines[1].split("\t") == ["c.png", "error: not an image", ""]
    assert lines[2].split("\t") == ["a.png", "cat 90.0%, dog 45.0%", "cat 90.0%, dog 45.0%"]
    assert lines[3].split("\t") == ["b.png", "-", "dog 30.0%, cat 10.0%"]
    assert "1 of 2 image(s) have no label at or above the threshold" in captured.err + \
        captured.out


def test_one_threshold_for_all_is_named_in_the_header(capsys) -> None:
    print_label_sets(_sets()[:1], 0.6)
    assert capsys.readouterr().out.splitlines()[0] == "path\tlabels (p >= 0.6)\ttop"


def test_a_probability_just_under_a_threshold_never_reads_as_the_threshold(capsys) -> None:
    cut = {"cat": 0.9, "dog": 0.5}
    print_label_sets([LabelSet("a.png", [], [("cat", 0.89996), ("dog", 0.1)], cut)], 0.9)
    assert "cat 89.9%" in capsys.readouterr().out  # rounded, 90.0% beside 'p >= 0.9'


def test_a_class_with_no_image_shows_no_made_up_scores(capsys) -> None:
    """A class absent from the evaluated data has no recall: the table says '-', not a
    0.0000 that reads as 'every image of it missed', and says why."""
    import torch

    from cnnkit.cli.tables import print_eval
    from cnnkit.tasks.metrics import compute

    truth = [0, 0, 2, 2]
    scores = torch.full((4, 3), -5.0)
    scores[torch.arange(4), torch.tensor(truth)] = 0.0
    print_eval(compute(scores.log_softmax(1), torch.tensor(truth), ("cat", "coffee", "rocket")))
    captured = capsys.readouterr()
    out = captured.out + captured.err
    coffee = next(line for line in out.splitlines() if "coffee" in line and "│" in line)
    assert [cell.strip() for cell in coffee.split("│")[2:6]] == ["-", "-", "-", "0"]
    macro = next(line for line in out.splitlines() if "macro avg" in line)
    assert "1.0000" in macro and "0.6667" not in macro
    assert "No image of coffee in this data" in " ".join(out.split())
