"""``adamergex pipeline``: the AdaMergeX recipe end to end (see :mod:`.spec`, :mod:`.stages`, :mod:`.report`)."""
