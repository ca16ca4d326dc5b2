"""Every chapter's exercises, graded against hirilib (or a student's module).

``pytest hirilib`` grades hirilib's own implementation of each exercise's spec;
``HIRILIB_STUDENT=my_answers.py pytest hirilib`` grades the names that file defines
(the names the exercises ask for: ``MyAttention``, ``attention_macs`` ...).  The second
test makes sure the checks fail the typical wrong answers with a message that names
the mistake (it only runs when grading hirilib itself).
"""

import os

import pytest

from hirilib.checks import _verdict, all_exercises, grade, implementation

EXERCISES = all_exercises()
MISTAKES = [(ex, phrase) for ex in EXERCISES for phrase in ex.mistakes]


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda e: f"ch{e.chapter}-{e.number}-{e.name}")
def test_exercise(ex):
    """The verdict ``grade()`` prints, in one line: what differs, the known mistake, or
    the exception the code raised (no traceback through hirilib)."""
    verdict, message = _verdict(ex, implementation(ex.name))
    if not verdict:
        pytest.fail(message, pytrace=False)


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


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda e: f"ch{e.chapter}-{e.number}-{e.name}")
def test_exercise_signature_is_the_one_the_chapter_stub_has(ex):
    """The instructors' page lists each signature; the chapter's stub takes the same
    arguments (so the page, the chapter and the check agree)."""
    import ast
    import json
    from pathlib import Path

    sig = ex.signature()
    assert sig.startswith(ex.name + "(") and sig.endswith(")"), sig
    chapters = Path(__file__).resolve().parents[2] / "chapters"
    if not chapters.is_dir():
        pytest.skip("no chapters/ beside the package (an installed hirilib)")
    nb = next(chapters.glob(f"{ex.chapter:02d}_*.ipynb"))
    for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse("".join(cell["source"]))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if getattr(node, "name", None) != ex.name:
                continue
            if isinstance(node, ast.ClassDef):
                node = next(n for n in node.body
                            if isinstance(n, ast.FunctionDef) and n.name == "__init__")
            args = [a.arg for a in node.args.args if a.arg != "self"]
            want = [a.split("=")[0].strip() for a in sig[len(ex.name) + 1:-1].split(",")]
            assert args == want, (nb.name, args, sig)
            return
    pytest.fail(f"no stub named {ex.name} in {nb.name}")


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


@pytest.mark.parametrize("content, kind, phrase", [
    (None, "missing", "does not exist; give the path of your .py file"),
    (None, "folder", "is a folder"),
    ("def attention_macs(H, W, C, R):\n    return (\n", "file",
     "line 2: '(' was never closed (a syntax error"),
    ("import sys\nsys.exit(2)\n", "file",
     "calls sys.exit(2) when it is imported; put that call under"),
    ("x = 1\ny = x / 0\n", "file",
     "raised ZeroDivisionError: division by zero when it is imported (line 2)"),
])
def test_a_file_that_cannot_be_graded_gets_one_clear_line(tmp_path, content, kind, phrase):
    from hirilib.checks import StudentFileError, grade_module

    path = tmp_path / "answers.py"
    if kind == "folder":
        path = tmp_path
    elif content is not None:
        path.write_text(content)
    with pytest.raises(StudentFileError) as info:
        grade_module(path)
    message = str(info.value)
    assert phrase in message and "\n" not in message, message


def test_student_variable_pointing_at_a_folder_says_so(tmp_path, monkeypatch):
    from hirilib.checks import StudentFileError, student_module

    monkeypatch.setenv("HIRILIB_STUDENT", str(tmp_path))
    with pytest.raises(StudentFileError, match="HIRILIB_STUDENT: .* is a folder"):
        student_module()


def test_code_that_exits_is_one_failed_line(capsys):
    import sys

    assert grade("attention_macs", lambda *a: sys.exit(3)) is False
    assert "your code called sys.exit(3)" in capsys.readouterr().out


def test_an_hr_block_built_from_plain_sequentials_passes():
    """Exercise 6.1 grades the function: any modules, in the text's order."""
    import torch.nn as nn
    import torch.nn.functional as F

    class MyHRBlock(nn.Module):
        def __init__(self, dim, mlp_ratio=16.0):
            super().__init__()
            h = int(dim * mlp_ratio)
            self.high = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=False),
                                      nn.BatchNorm2d(dim))
            self.low = nn.Sequential(nn.Conv2d(dim, dim, 3, 2, 1, groups=dim, bias=False),
                                     nn.BatchNorm2d(dim), nn.Conv2d(dim, h, 1), nn.GELU(),
                                     nn.Conv2d(h, dim, 1))

        def forward(self, x):
            low = F.interpolate(self.low(x), size=x.shape[-2:], mode="nearest")
            return x + self.high(x) + low

    assert grade("MyHRBlock", MyHRBlock, quiet=True) is True


def test_max_batch_names_a_mistake_only_when_it_explains_every_case(capsys):
    def optimizer_left_out_for_big_models_only(p, a, budget, reserve):
        k = 8 if p > 20e6 else 16
        return int((budget - reserve - k * p) // a)

    assert grade("max_batch", optimizer_left_out_for_big_models_only) is False
    out = " ".join(capsys.readouterr().out.split())
    assert "you give" in out and "that is the answer with" not in out, out
