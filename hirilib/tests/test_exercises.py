"""Every chapter's exercises, graded against hirilib (or a student's module).

``pytest hirilib`` grades hirilib's own implementation of each exercise's spec;
``HIRILIB_STUDENT=my_answers.py pytest hirilib`` grades the names that file defines
(the names the exercises ask for: ``MyAttention``, ``attention_macs`` ...).  The second
test makes sure the checks fail the typical wrong answers with a message that names
the mistake (it only runs when grading hirilib itself).
"""

import os

import pytest

from hirilib.checks import all_exercises, grade, implementation

EXERCISES = all_exercises()
MISTAKES = [(ex, phrase) for ex in EXERCISES for phrase in ex.mistakes]


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda e: f"ch{e.chapter}-{e.number}-{e.name}")
def test_exercise(ex):
    ex.check(implementation(ex.name))


@pytest.mark.skipif(bool(os.environ.get("HIRILIB_STUDENT")), reason="checks the checks themselves")
@pytest.mark.parametrize("ex, phrase", MISTAKES, ids=lambda v: getattr(v, "name", str(v)[:30]))
def test_checks_name_known_mistakes(ex, phrase, capsys):
    assert grade(ex.name, ex.mistakes[phrase]()) is False
    out = " ".join(capsys.readouterr().out.split())  # grade() wraps to the page's width
    assert phrase in out, out


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda e: f"ch{e.chapter}-{e.number}-{e.name}")
def test_exercise_has_a_one_line_summary(ex):
    """The instructors' page lists every exercise with what it asks, in one short line
    (a check's docstring is the whole specification, too long for that table)."""
    assert ex.summary and "\n" not in ex.summary and len(ex.summary) <= 100, ex.summary


def test_exercises_are_numbered_in_order():
    for chapter in {ex.chapter for ex in EXERCISES}:
        numbers = [ex.number for ex in EXERCISES if ex.chapter == chapter]
        assert numbers == list(range(1, len(numbers) + 1)), (chapter, numbers)


def test_grade_reports_a_crash_in_one_line(capsys):
    class Crashes:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("shape mismatch in my code\nsecond line")

    assert grade("MyAttention", Crashes) is False
    out = " ".join(capsys.readouterr().out.split())
    assert "your code raised RuntimeError: shape mismatch in my code" in out
    assert "second line" not in out and "Traceback" not in out


def test_grade_module_grades_the_names_a_file_defines(tmp_path):
    from hirilib.checks import grade_module

    answers = tmp_path / "answers.py"
    answers.write_text("def attention_macs(H, W, C, R):\n    return 0\n\n"
                       "def scaled_dot_product_attention(q, k, v):\n"
                       "    raise NotImplementedError\n")
    results = {ex.name: (verdict, message) for ex, verdict, message in grade_module(answers)}
    assert set(results) == {"attention_macs", "scaled_dot_product_attention"}
    assert results["attention_macs"][0] is False and "you give 0" in results["attention_macs"][1]
    assert results["scaled_dot_product_attention"][0] is None


def test_grade_says_not_attempted(capsys):
    def stub(*args):
        raise NotImplementedError

    assert grade("attention_macs", stub) is None
    assert "not attempted yet" in " ".join(capsys.readouterr().out.split())
