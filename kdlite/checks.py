"""Checks for the book's exercises: a reader's answer, tested against an independent computation.

A check cell in a chapter defines a test and hands it to :func:`exercise`, which runs it at once::

    @checks.exercise("3.2", "hard_weighted_loss is distillation_loss with alpha = 1 - beta")
    def check_3_2():
        s, t, y = torch.randn(16, 10), torch.randn(16, 10), torch.randint(0, 10, (16,))
        assert torch.allclose(hard_weighted_loss(s, t, y, 4, 0.3), distillation_loss(s, t, y, 4, 0.7)), \\
            "hard_weighted_loss(s, t, y, 4, 0.3) differs from distillation_loss(s, t, y, 4, 0.7)"

It prints one line, ``✓ Exercise 3.2: <what is right>`` or ``✗ Exercise 3.2: <what is wrong>``, and never raises,
so that a notebook runs on past an exercise not yet answered. A failed ``assert`` gives its message; a stub that
still raises ``NotImplementedError`` (or leaves ``...`` as its answer) says so; any other error is named. The
classroom autograder (``tools/classroom.py grade``) reads these lines.
"""

from __future__ import annotations

from collections.abc import Callable

PASS, FAIL = "✓", "✗"


def report(exercise: str, ok: bool, message: str) -> bool:
    """Print the one line of a check, ``✓ Exercise N.k: ...`` or ``✗ Exercise N.k: ...``; return ``ok``."""
    print(f"{PASS if ok else FAIL} Exercise {exercise}: {message}")
    return ok


def run(exercise: str, test: Callable[[], object], right: str) -> bool:
    """Run ``test()``: ✓ with ``right`` if it returns without an error, else ✗ with what went wrong."""
    try:
        test()
    except NotImplementedError:
        return report(exercise, False, "not answered yet: replace the `raise NotImplementedError` in the exercise's "
                                       "cell with your answer, run it, then run this check again")
    except Exception as e:  # a failed assert says what is wrong; any other error is the reader's code failing
        if "ellipsis" in str(e).lower():  # the stub's `...` is still the answer
            return report(exercise, False, "not answered yet: replace the `...` in the exercise's cell with an answer")
        wrong = str(e) if isinstance(e, AssertionError) else f"your answer raised {type(e).__name__}: {e}"
        return report(exercise, False, wrong or "an assertion of the check failed")
    return report(exercise, True, right)


def exercise(exercise: str, right: str) -> Callable[[Callable[[], object]], bool]:
    """Decorator form of :func:`run`: ``@exercise("3.2", "...")`` over ``def check_3_2(): ...`` runs the check
    when the cell runs, and leaves ``check_3_2`` as its result, True or False."""
    return lambda test: run(exercise, test, right)
