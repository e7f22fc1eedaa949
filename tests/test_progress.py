"""progress_bar: a no-op object off a terminal or when quiet (nothing printed)."""

from volseg.progress import progress_bar


def test_quiet_bar_accepts_updates(capsys):
    with progress_bar("work", total=3, quiet=False) as bar:  # stderr is captured: not a terminal
        bar.advance(2)
        bar.update(status="half")
    with progress_bar("work", total=None, quiet=True) as bar:
        bar.advance(1)
    assert capsys.readouterr().err == ""
