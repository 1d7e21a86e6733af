"""The task table of the cross-lingual suite: one :class:`TaskSpec` per benchmark, by name.

===========  ==========  ===================================  ===========  ============  ===============
task         kind        hub dataset                          split        per language  metric
===========  ==========  ===================================  ===========  ============  ===============
``xnli``     choice      ``facebook/xnli``                    test         1000 of 5010  accuracy
``xcopa``    choice      ``cambridgeltl/xcopa``               test         500           accuracy
``pawsx``    choice      ``google-research-datasets/paws-x``  test         2000          accuracy
``mgsm``     generation  ``juletxara/mgsm``                   test         250           final-number EM
``xquad``    generation  ``google/xquad``                     validation   1000 of 1190  SQuAD EM / F1
``xlsum``    generation  ``csebuetnlp/xlsum``                 test         500 sampled   ROUGE-L
``count``    choice      shipped (the embedded demo)          all          all (59)      accuracy
===========  ==========  ===================================  ===========  ============  ===============
"""

from __future__ import annotations

from adamergex_pl.errors import InvalidValueError
from data_modules.tasks.count import COUNT
from data_modules.tasks.mgsm import MGSM
from data_modules.tasks.pawsx import PAWSX
from data_modules.tasks.spec import PROMPT_STYLES, TaskSpec
from data_modules.tasks.xcopa import XCOPA
from data_modules.tasks.xlsum import XLSUM
from data_modules.tasks.xnli import XNLI
from data_modules.tasks.xquad import XQUAD

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (XNLI, XCOPA, PAWSX, MGSM, XQUAD, XLSUM, COUNT)}


def get_task(name: str) -> TaskSpec:
    """The spec of task ``name``.

    Raises:
        ValueError: an unknown task name.
    """
    if name not in TASKS:
        raise InvalidValueError(
            f"task={name!r} is not a task of the suite; expected one of {', '.join(TASKS)}"
        )
    return TASKS[name]


__all__ = ["PROMPT_STYLES", "TASKS", "TaskSpec", "get_task"]
