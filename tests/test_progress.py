"""Progress off a terminal: one plain line per finished step, with the figures a bar would show."""
from __future__ import annotations

import pytest

from spinn_export.progress import PlainProgress, progress


def test_off_a_terminal_each_step_is_one_plain_line(capsys: pytest.CaptureFixture[str]) -> None:
    bar = progress(range(3), desc="train dense", unit="epoch")  # pytest's captured stderr is not a terminal
    assert isinstance(bar, PlainProgress)
    for epoch in bar:
        bar.set_postfix(loss=f"{1.0 / (epoch + 1):.2f}")
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["  train dense: epoch 1/3, loss=1.00", "  train dense: epoch 2/3, loss=0.50",
                     "  train dense: epoch 3/3, loss=0.33"]
    assert "\r" not in "".join(lines)
    bar.close()  # as after a loop that stopped early: nothing more is printed
    assert capsys.readouterr().err == ""


def test_disabled_progress_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(progress(range(2), desc="quiet", unit="round", enabled=False)) == [0, 1]
    assert capsys.readouterr().err == ""
