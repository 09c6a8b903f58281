"""`shipyard assess` as a user runs it: answers files, the terminal's questions, the report,
and bad input answered with exit code 2 and a message, never a traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from shipyard.assess import QUESTIONS
from shipyard.cli import app, main

IDS = [q.id for q in QUESTIONS]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "assess"
Run = Callable[..., tuple[int, str, str]]


def answers_file(folder: Path, yes: int) -> Path:
    path = folder / f"answers-{yes}.yaml"
    path.write_text(yaml.safe_dump({id_: i < yes for i, id_ in enumerate(IDS)}))
    return path


def invoke(home: Path, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, ["--home", str(home), "assess", *args], input=stdin)


@pytest.fixture
def shipyard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    """`shipyard ARGS` through the entry point, which maps errors to exit codes: (code, out, err)."""

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["shipyard", "--home", str(tmp_path / "home"), *args])
        with pytest.raises(SystemExit) as exited:
            main()
        out, err = capsys.readouterr()
        return int(exited.value.code or 0), out, " ".join(err.split())

    return run


@pytest.mark.parametrize(
    ("yes", "band"),
    [
        (0, "needs 12+ months of groundwork"),
        (7, "needs 12+ months of groundwork"),
        (8, "needs 6-12 months of preparation"),
        (11, "needs 6-12 months of preparation"),
        (12, "ready for AI pilots"),
        (15, "ready for AI pilots"),
    ],
)
def test_json_gives_the_score_and_band_of_an_answers_file(
    tmp_path: Path, yes: int, band: str
) -> None:
    result = invoke(tmp_path, "--answers", str(answers_file(tmp_path, yes)), "--json")
    assert result.exit_code == 0, result.output
    readiness = json.loads(result.stdout)["readiness"]
    assert (readiness["score"], readiness["out_of"], readiness["band"]) == (yes, 15, band)
    assert [g["id"] for g in readiness["gaps"]] == IDS[yes:]


def test_the_summary_names_the_band_the_areas_and_each_gap(tmp_path: Path) -> None:
    result = invoke(tmp_path, "--answers", str(EXAMPLES / "answers.yaml"))
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "AI readiness: 11/15, needs 6-12 months of preparation" in text
    assert "data 4/5, technical 4/5, organisational 3/5 (weakest)" in text
    for gap in ("data.quality", "tech.pipelines", "org.budget", "org.governance"):
        assert gap in text


def test_use_cases_alone_give_the_matrix_without_the_questionnaire(tmp_path: Path) -> None:
    result = invoke(tmp_path, "--use-cases", str(EXAMPLES / "use_cases.yaml"), "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["readiness"] is None
    first = found["use_cases"][0]
    assert (first["name"], first["priority"], first["quadrant"]) == (
        "Card fraud scoring",
        1,
        "do_first",
    )
    assert first["sourcing"]["decision"] == "build"
    table = invoke(tmp_path, "--use-cases", str(EXAMPLES / "use_cases.yaml"))
    text = " ".join(table.stdout.split())
    assert "AI readiness" not in text
    assert "Money-mule network mapping: avoid" in text
    assert "fix: cut a first release that shows value within 6 months" in text


def test_the_html_report_draws_one_dot_per_use_case_and_the_band(tmp_path: Path) -> None:
    report = tmp_path / "assess.html"
    result = invoke(
        tmp_path, "--answers", str(EXAMPLES / "answers.yaml"),
        "--use-cases", str(EXAMPLES / "use_cases.yaml"), "--report", str(report),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"wrote{report}" in "".join(result.stdout.split())  # however the path wraps
    page = report.read_text()
    svg = re.search(r"<svg.*?</svg>", page, re.S)
    assert svg is not None
    assert svg.group(0).count('<g class="use-case">') == 5
    assert svg.group(0).count("<circle") == 5
    assert svg.group(0).count('class="threshold"') == 2  # the quadrant lines
    for label in ("do first", "plan (data first)", "quick win", "avoid"):
        assert f">{label}</text>" in svg.group(0)
    assert "11/15: needs 6-12 months of preparation" in page
    assert "nobody owns or measures data quality" in page  # a gap
    assert "the target is 100% accuracy" in page  # a pitfall
    # standalone: nothing fetched, nothing run
    assert "<script" not in page
    assert not re.search(r"(src|href)=", page)


def test_text_from_a_use_case_file_never_becomes_markup(tmp_path: Path) -> None:
    cases = yaml.safe_load((EXAMPLES / "use_cases.yaml").read_text())
    cases["use_cases"][0]["name"] = "<script>alert(1)</script>"
    path = tmp_path / "cases.yaml"
    path.write_text(yaml.safe_dump(cases))
    report = tmp_path / "assess.html"
    assert invoke(tmp_path, "--use-cases", str(path), "--report", str(report)).exit_code == 0
    page = report.read_text()
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_brackets_in_a_name_print_as_text_not_terminal_markup(tmp_path: Path) -> None:
    cases = yaml.safe_load((EXAMPLES / "use_cases.yaml").read_text())
    cases["use_cases"][0]["name"] = "[/] fraud [bold]v2"
    path = tmp_path / "cases.yaml"
    path.write_text(yaml.safe_dump(cases))
    result = invoke(tmp_path, "--use-cases", str(path))
    assert result.exit_code == 0, result.output
    assert "1. [/] fraud [bold]v2: do first" in result.stdout


def test_a_markdown_report_when_the_name_ends_in_md(tmp_path: Path) -> None:
    report = tmp_path / "assess.md"
    result = invoke(
        tmp_path, "--answers", str(EXAMPLES / "answers.yaml"),
        "--use-cases", str(EXAMPLES / "use_cases.yaml"), "--report", str(report), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)  # the JSON stays alone on stdout
    text = report.read_text()
    assert "**11/15: needs 6-12 months of preparation.** Weakest area: organisational." in text
    assert (
        "| 1 | Card fraud scoring | 5 | 5 | 4 | 5 | 3 | 4.67 | 4.33 | do first | build | 0 |"
        in text
    )


def test_the_questions_are_asked_in_the_terminal(tmp_path: Path) -> None:
    stdin = "y\n" * 8 + "n\n" * 7
    result = invoke(tmp_path, "--interactive", "--json", stdin=stdin)
    assert result.exit_code == 0, result.output
    assert "[1/15] Is the data the use case needs collected digitally" in result.stderr
    assert "[15/15] Is someone accountable for AI governance" in result.stderr
    readiness = json.loads(result.stdout[result.stdout.index("{") :])["readiness"]
    assert (readiness["score"], readiness["band"]) == (8, "needs 6-12 months of preparation")
    assert readiness["answers"]["tech.apis"] is True  # the 8th question
    assert readiness["answers"]["tech.skills"] is False


def test_an_answer_that_is_not_y_or_n_is_asked_again(tmp_path: Path) -> None:
    result = invoke(tmp_path, "--interactive", "--json", stdin="maybe\n" + "y\n" * 15)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{") :])["readiness"]["score"] == 15


def test_without_a_terminal_or_an_answers_file_it_says_what_to_pass(shipyard: Run) -> None:
    code, out, err = shipyard("assess")
    assert code == 2
    assert err.startswith(
        "error: stdin is not a terminal, so the questions cannot be asked: pass --answers FILE"
    )
    assert out == ""


def test_the_template_lists_every_question_and_is_never_overwritten(
    tmp_path: Path, shipyard: Run
) -> None:
    path = tmp_path / "answers.yaml"
    result = invoke(tmp_path, "--template", str(path))
    assert result.exit_code == 0, result.output
    template = path.read_text()
    assert all(f"\n{q.id}:\n" in template and q.text in template for q in QUESTIONS)
    code, _, err = shipyard("assess", "--answers", str(path))
    assert code == 2
    assert "no answer for data.digital, data.history" in err
    path.write_text(template.replace(":\n", ": no\n"))
    assert invoke(tmp_path, "--answers", str(path)).exit_code == 0
    code, _, err = shipyard("assess", "--template", str(path))
    assert code == 2
    assert "already exists" in err
    assert path.read_text() == template.replace(":\n", ": no\n")


ANSWERS = (EXAMPLES / "answers.yaml").read_text()
USE_CASES = (EXAMPLES / "use_cases.yaml").read_text()
BAD_FILES = {  # name: (option, file's text or None for no file, what the message says)
    "unknown-id": (
        "--answers", ANSWERS + "data.volume: yes\n",
        "unknown question id 'data.volume'; the ids are data.digital, data.history",
    ),
    "missing-answer": (
        "--answers", re.sub(r"\norg\.users:.*\n", "\n", ANSWERS), "no answer for org.users",
    ),
    "score-6": (
        "--use-cases", USE_CASES.replace("business_value: 3", "business_value: 6", 1),
        "use case 2 ('Chargeback dispute triage'): business_value must be a whole number from "
        "1 (low) to 5 (high), got 6",
    ),
    "extra-field": (
        "--use-cases", USE_CASES.replace("    description: Score", "    owner: risk\n    description: Score"),
        "use case 1 ('Card fraud scoring'): unknown field 'owner'; the fields are name, description",
    ),
    "broken-yaml": (
        "--use-cases", "use_cases: [\n", "is not valid YAML (line 2, column 1)",
    ),
    "no-answers-file": ("--answers", None, "answers file"),
    "no-use-cases-file": ("--use-cases", None, "use cases file"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_exit_2_with_a_message_and_no_traceback(
    tmp_path: Path, shipyard: Run, case: str
) -> None:
    option, text, message = BAD_FILES[case]
    path = tmp_path / "input.yaml"
    if text is not None:
        path.write_text(text)
    code, out, err = shipyard("assess", option, str(path))
    assert code == 2
    assert err.startswith("error: ")
    assert message in err
    assert "Traceback" not in err + out
    assert out == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--answers", "a.yaml", "--interactive"], "--answers and --interactive both give the answers"),
        (["--use-cases", str(EXAMPLES / "use_cases.yaml"), "--report", "out.pdf"], "name the report .html or .md"),
        (["--interactive", "--report", "nowhere/assess.html"], "the folder nowhere does not exist"),
        (["--template", "t.yaml", "--answers", "a.yaml"], "--template writes a blank answers file and does nothing else"),
    ],
)  # fmt: skip
def test_options_that_do_not_go_together_are_refused(
    shipyard: Run, args: list[str], message: str
) -> None:
    code, _, err = shipyard("assess", *args)
    assert code == 2
    assert message in err


def test_a_real_process_answers_a_missing_file_with_exit_2_and_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "SHIPYARD_HOME": str(tmp_path), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "shipyard", "assess", "--answers", str(tmp_path / "none.yaml")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("error: answers file")
    assert "Traceback" not in done.stderr
