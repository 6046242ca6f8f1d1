"""Bad input to kdlite.report raises errors that name the argument; good input matches computations done here."""

import statistics

import matplotlib
import pytest

from kdlite import report

matplotlib.use("Agg")

NAN, INF = float("nan"), float("inf")


@pytest.fixture
def fig():
    import matplotlib.pyplot as plt

    fig = plt.figure()
    yield fig
    plt.close(fig)


@pytest.mark.parametrize("values,bad", [([NAN], "nan at position 0"), ([1.0, INF, -INF], "inf at position 1, -inf")])
def test_mean_std_rejects_non_finite_values(values, bad):
    for call in (lambda: report.mean_std(values), lambda: report.fmt_mean_std(values)):
        with pytest.raises(ValueError, match=rf"values must be finite; got {bad}"):
            call()


def test_mean_std_rejects_what_is_not_numbers():
    with pytest.raises(TypeError, match=r"values must be numbers; got 'a' at position 1"):
        report.mean_std([1.0, "a"])
    with pytest.raises(TypeError, match=r"values must be an iterable of numbers; got float"):
        report.mean_std(0.5)


def test_fmt_mean_std_accepts_a_generator_and_checks_its_options():
    values = [0.91, 0.93, 0.96]
    m, s = statistics.mean(values), statistics.stdev(values)
    assert report.fmt_mean_std((v for v in values), scale=100, digits=1) == f"{100 * m:.1f} ± {100 * s:.1f} (n=3)"
    assert report.fmt_mean_std(iter([2.0]), digits=0) == "2 ± 0 (n=1)"
    for digits in (-1, 1.5, "2", True):
        with pytest.raises(ValueError, match=rf"digits must be an int >= 0; got {digits!r}"):
            report.fmt_mean_std(values, digits=digits)
    for scale in (NAN, "100", None):
        with pytest.raises(ValueError, match=r"scale must be a finite number; got"):
            report.fmt_mean_std(values, scale=scale)


@pytest.mark.parametrize("rows,what", [({"a": 1}, "got dict"), ([[1, 2]], r"rows\[0\] is a list"),
                                       ([{"a": 1}, "b"], r"rows\[1\] is a str"), (3, "got int")])
def test_table_rows_must_be_a_sequence_of_dicts(rows, what):
    for call in (lambda: report.table(rows), lambda: report.show_table(rows), lambda: report.save_results("x", rows)):
        with pytest.raises(TypeError, match=rf"rows must be a sequence of dicts.*{what}"):
            call()


def test_table_needs_columns():
    with pytest.raises(ValueError, match="table has no columns: the rows are empty dicts"):
        report.table([{}])
    with pytest.raises(TypeError, match=r"columns must be a sequence of column names; got str 'ab'"):
        report.table([{"a": 1, "b": 2}], columns="ab")
    # a generator of rows works, and explicit columns pick and order them
    lines = report.table(({"a": i, "b": i / 3} for i in range(2)), columns=["b", "a"]).splitlines()
    assert lines == ["| b | a |", "|---|---|", "| 0 | 0 |", f"| {1 / 3:.4g} | 1 |"]


@pytest.mark.parametrize("name", ["", "  ", "../escaped", "sub/x", "a\\b", "..", None, 3])
def test_save_figure_names_must_be_plain_file_names(fig, tmp_path, monkeypatch, name):
    monkeypatch.setenv("KDLITE_FIGURES", str(tmp_path / "figures"))
    with pytest.raises(ValueError, match=r"name must be a plain file name \(non-empty, no folders\).*; got"):
        report.save_figure(fig, name)
    monkeypatch.delenv("KDLITE_FIGURES")
    with pytest.raises(ValueError, match=r"name must be a plain file name"):  # also when nothing would be saved
        report.save_figure(fig, name)
    assert not any(tmp_path.rglob("*.png"))


def test_save_figure_needs_a_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLITE_FIGURES", str(tmp_path))
    for fig in (None, "fig", [1, 2]):
        with pytest.raises(TypeError, match=rf"fig must be a matplotlib Figure .*; got {type(fig).__name__}"):
            report.save_figure(fig, "x")
    assert not any(tmp_path.iterdir())


def test_save_figure_writes_inside_the_folder(fig, tmp_path, monkeypatch):
    monkeypatch.setenv("KDLITE_FIGURES", str(tmp_path))
    assert report.save_figure(fig, "06_ptq_bits") == tmp_path / "06_ptq_bits.png"
    assert [p.name for p in tmp_path.iterdir()] == ["06_ptq_bits.png"]
    assert (tmp_path / "06_ptq_bits.png").stat().st_size > 0


def test_table_columns_are_the_union_of_the_rows_keys():
    text = report.table([{"a": 1, "b": 2.0}, {"c": "x", "a": 3}])
    assert text.splitlines() == ["| a | b | c |", "|---|---|---|", "| 1 | 2 |  |", "| 3 |  | x |"]


def test_difference_and_clear_against_statistics():
    a, b = [97.1, 97.3, 97.2], [96.8, 97.0, 96.6]  # chapter 8's worked example
    d, se = report.difference(a, b)
    se_here = (statistics.variance(a) / 3 + statistics.variance(b) / 3) ** 0.5
    assert abs(d - (statistics.fmean(a) - statistics.fmean(b))) < 1e-12 and abs(se - se_here) < 1e-12
    assert report.clear(a, b) and report.clear(b, a)  # d ≈ 3.1 standard errors, either way round
    assert not report.clear(a, [97.0, 97.4, 96.9])  # means 0.1 apart, se ≈ 0.15
    assert report.difference([1.0], [0.5]) == (0.5, 0.0) and not report.clear([1.0], [0.5])  # one run: no spread
    assert report.difference((x for x in a), iter(b)) == (d, se)  # generators are read once


@pytest.mark.parametrize("a,b,error,match", [([], [1.0], ValueError, "a must hold at least one run"),
                                             ([1.0], [], ValueError, "b must hold at least one run"),
                                             ([1.0, NAN], [1.0], ValueError, "values must be finite"),
                                             ("abc", [1.0], TypeError, "iterable of numbers")])
def test_difference_and_clear_reject_bad_runs(a, b, error, match):
    for f in (report.difference, report.clear):
        with pytest.raises(error, match=match):
            f(a, b)
