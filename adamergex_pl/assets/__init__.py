"""Files shipped with the package (tiny models, demo data, task samples) and :mod:`.builtin`, which resolves
``builtin:<name>`` model names and ``builtin:<file>`` data paths to them."""
