"""``pytest hirilib`` grades every exercise; ``HIRILIB_STUDENT=file.py pytest hirilib`` grades
the exercise names the file defines and says so at the start of the run."""

import pytest


def pytest_report_header(config):
    from hirilib.checks import sources, student_module

    if student_module() is None:
        return ["exercises: grading hirilib's own implementations "
                "(HIRILIB_STUDENT=your_file.py grades yours)"]
    src = sources()
    return [f"exercises from your file: {', '.join(src['student'])}",
            f"exercises from hirilib:   {', '.join(src['hirilib']) or '(none)'}"]


def pytest_configure(config):
    import os

    if not os.environ.get("HIRILIB_STUDENT", "").strip():
        return
    from hirilib.checks import StudentFileError, all_exercises, sources

    try:
        src = sources()
    except StudentFileError as e:  # missing, a folder, a syntax error, exits ...
        raise pytest.UsageError(str(e)) from None
    except Exception as e:
        raise pytest.UsageError(f"HIRILIB_STUDENT: {type(e).__name__}: {e}") from None
    if not src["student"]:
        names = ", ".join(e.name for e in all_exercises())
        raise pytest.UsageError(
            f"HIRILIB_STUDENT={os.environ['HIRILIB_STUDENT']} defines none of the exercise "
            f"names, so nothing of yours would be graded. Name your functions and classes as "
            f"the exercises ask: {names}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed check is reported as its message, not as a traceback through hirilib."""
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and report.failed:
        from hirilib.checks import CheckFailed

        if call.excinfo.errisinstance(CheckFailed):
            report.longrepr = f"{item.name}: {call.excinfo.value}"
