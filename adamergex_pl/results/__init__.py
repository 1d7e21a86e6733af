"""Results: how they are selected (:mod:`.selection`), rendered (:mod:`.tables`) and written (:mod:`.files`)."""
