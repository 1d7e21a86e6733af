"""Results: one source for how results are selected, rendered and written.

Modules: :mod:`.selection` (which metric a table is about, which direction is better, the best scale per
language), :mod:`.tables` (plain-text and Markdown tables), :mod:`.files` (atomic text writes).
"""
