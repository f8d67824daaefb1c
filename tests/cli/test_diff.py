"""Settings diffs as the CLI prints them: one line per change, coloured on a terminal; a summary."""

from __future__ import annotations

from minerva_ai.cli.diff import render_diff, summarize_diff
from minerva_ai.core.settings_diff import diff_settings


def test_render_and_summarize() -> None:
    changes = diff_settings({"r": {"a": 1, "b": 2}}, {"r": {"a": 3, "c": "x"}})
    assert render_diff(changes) == '~ r.a: 1 -> 3\n- r.b: 2\n+ r.c: "x"'
    coloured = render_diff(changes, color=True)
    assert coloured.splitlines()[0] == "\x1b[33m~ r.a: 1 -> 3\x1b[0m"
    assert summarize_diff(changes) == "~r.a -r.b +r.c"
    assert summarize_diff(changes, limit=1) == "~r.a (+2)"
    assert summarize_diff([]) == "no changes"
