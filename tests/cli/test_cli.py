"""The `shipyard` command as a user runs it: real processes, JSON output, meaningful exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
import pytest
from tests.conftest import records


def shipyard(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SHIPYARD_HOME": str(home),
        "SHIPYARD_ACTOR": "cli-tester",
        "COLUMNS": "200",
    }
    env.pop("SHIPYARD_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "shipyard", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def files(
    tmp_path_factory: pytest.TempPathFactory, fraud_model: Any, fraud_sample: pd.DataFrame
) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli-files")
    model = folder / "fraud.joblib"
    joblib.dump(fraud_model, model)
    sample = folder / "sample.parquet"
    fraud_sample.to_parquet(sample)
    requests = folder / "requests.json"
    requests.write_text(json.dumps({"instances": records(fraud_sample.iloc[:3])}))
    return {"model": model, "sample": sample, "requests": requests}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, files: dict[str, Path]) -> Path:
    """A home with fraud-detector:1 and :2 registered through the CLI; production -> 1."""
    home = tmp_path_factory.mktemp("cli-home")
    first = shipyard(
        home, "models", "register", str(files["model"]), "--name", "fraud-detector",
        "--sample", str(files["sample"]), "--metric", "auc=0.91", "--param", "C=1.0",
        "--tag", "team=risk", "--purpose", "flag fraud", "--threshold", "0.3",
        "--alias", "production", "--json",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    second = shipyard(
        home, "models", "register", str(files["model"]), "--name", "fraud-detector",
        "--sample", str(files["sample"]),
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert "registered fraud-detector:2" in second.stdout
    return home


def test_register_prints_the_new_version_as_json(home: Path) -> None:
    result = shipyard(home, "models", "show", "fraud-detector:1", "--json")
    assert result.returncode == 0, result.stderr
    version = json.loads(result.stdout)
    assert version["version"] == 1
    assert version["metrics"] == {"auc": 0.91}
    assert version["params"] == {"C": 1.0}
    assert version["tags"] == {"team": "risk"}
    assert version["threshold"] == 0.3
    assert version["aliases"] == ["production"]
    assert version["created_by"] == "cli-tester"


def test_list_and_show_render_tables_and_json(home: Path) -> None:
    listed = json.loads(shipyard(home, "models", "list", "--json").stdout)
    assert [(m["name"], m["latest_version"], m["aliases"]) for m in listed] == [
        ("fraud-detector", 2, {"production": 1})
    ]
    table = shipyard(home, "models", "list").stdout
    assert "fraud-detector" in table
    assert "production→1" in table
    shown = shipyard(home, "models", "show", "fraud-detector").stdout
    assert "onnxruntime" in shown
    assert "auc=0.91" in shown
    detail = shipyard(home, "models", "show", "fraud-detector:production").stdout
    assert "fraud-detector:1" in detail
    assert "distance_from_home_km" in detail


def test_alias_archive_and_history(home: Path) -> None:
    moved = shipyard(home, "models", "alias", "fraud-detector", "2", "staging", "--json")
    assert json.loads(moved.stdout) == {
        "name": "fraud-detector",
        "alias": "staging",
        "version": 2,
        "previous": None,
    }
    refused = shipyard(home, "models", "archive", "fraud-detector", "2")
    assert refused.returncode == 4  # Conflict: staging points at it
    assert "move the alias first" in refused.stderr
    history = json.loads(shipyard(home, "models", "history", "fraud-detector", "--json").stdout)
    assert history[0]["action"] == "alias.moved"
    assert history[0]["details"]["alias"] == "staging"


def test_predict_scores_a_file_and_stdin_without_a_server(
    home: Path, files: dict[str, Path], fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    result = shipyard(
        home, "predict", "fraud-detector", "--input", str(files["requests"]), "--json"
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["version"] == 1
    expected = fraud_model.predict_proba(fraud_sample.iloc[:3])[:, 1]
    assert [p["score"] for p in body["predictions"]] == pytest.approx(expected.tolist(), abs=1e-5)

    one = json.dumps(records(fraud_sample.iloc[:1])[0])
    piped = shipyard(home, "predict", "fraud-detector:2", "--input", "-", stdin=one)
    assert piped.returncode == 0, piped.stderr
    assert "fraud-detector:2 on onnxruntime" in piped.stdout


def test_predict_reads_csv_and_parquet_and_writes_every_format(
    home: Path, tmp_path: Path, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    rows = fraud_sample.iloc[:40]
    expected = pytest.approx(fraud_model.predict_proba(rows)[:, 1].tolist(), abs=1e-5)
    rows.to_csv(tmp_path / "in.csv", index=False)
    rows.to_parquet(tmp_path / "in.parquet")
    for source in ("in.csv", "in.parquet"):
        shown = shipyard(home, "predict", "fraud-detector", "-i", str(tmp_path / source), "--json")
        assert shown.returncode == 0, shown.stderr
        assert [p["score"] for p in json.loads(shown.stdout)["predictions"]] == expected
    outputs = {name: tmp_path / f"out.{name}" for name in ("json", "jsonl", "csv", "parquet")}
    for path in outputs.values():
        wrote = shipyard(home, "predict", "fraud-detector", "-i", str(tmp_path / "in.parquet"), "-o", str(path))  # fmt: skip
        assert wrote.returncode == 0, wrote.stderr
        assert f"wrote 40 prediction(s) of fraud-detector:1 to {path}" in wrote.stderr
        assert wrote.stdout == ""  # no table when the predictions went to a file
    answer = json.loads(outputs["json"].read_text())
    assert [p["score"] for p in answer["predictions"]] == expected
    lines = [json.loads(line) for line in outputs["jsonl"].read_text().splitlines()]
    assert [line["score"] for line in lines] == expected
    for table in (pd.read_csv(outputs["csv"]), pd.read_parquet(outputs["parquet"])):
        assert list(table.columns) == ["prediction_id", "score", "label", "threshold"]
        assert table["score"].tolist() == expected
        assert table["prediction_id"].is_unique


def test_predict_scores_more_rows_than_one_request_takes(
    home: Path, tmp_path: Path, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    rows = fraud_sample.iloc[:250]
    rows.to_parquet(tmp_path / "many.parquet")
    env_home = shipyard(home, "predict", "fraud-detector", "-i", str(tmp_path / "many.parquet"))
    assert env_home.returncode == 0, env_home.stderr
    assert "... and 200 more; --output FILE keeps them all" in env_home.stdout
    out = tmp_path / "many.csv"
    limited = subprocess.run(
        [sys.executable, "-m", "shipyard", "predict", "fraud-detector", "-i",
         str(tmp_path / "many.parquet"), "-o", str(out)],
        env={**os.environ, "SHIPYARD_HOME": str(home), "SHIPYARD_MAX_BATCH_RECORDS": "100"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert limited.returncode == 0, limited.stderr
    scores = pd.read_csv(out)["score"].tolist()
    assert scores == pytest.approx(fraud_model.predict_proba(rows)[:, 1].tolist(), abs=1e-5)


def test_predict_names_an_unreadable_input_or_output(home: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.parquet"
    garbage.write_text("amount,label\n1,0\n")
    bad = shipyard(home, "predict", "fraud-detector", "-i", str(garbage))
    assert bad.returncode == 2
    assert f"{garbage} is not a readable Parquet file" in bad.stderr
    assert "Traceback" not in bad.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "is not a readable CSV file" in shipyard(home, "predict", "fraud-detector", "-i", str(empty)).stderr  # fmt: skip
    wrong = shipyard(home, "predict", "fraud-detector", "-i", str(garbage), "-o", "out.xlsx")
    assert wrong.returncode == 2
    assert "name the output .json, .jsonl, .csv or .parquet" in wrong.stderr


def test_version_and_help_that_says_what_each_option_takes() -> None:
    import typer.main
    from typer.testing import CliRunner

    from shipyard.cli import app
    from shipyard.core.version import __version__

    version = subprocess.run(
        [sys.executable, "-m", "shipyard", "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0
    assert version.stdout == f"shipyard {__version__}\n"

    root = typer.main.get_command(app)
    context = root.make_context("shipyard", [], resilient_parsing=True)

    def commands(group: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
        found = [(path, group)]
        for name in group.list_commands(context) if hasattr(group, "list_commands") else ():
            found += commands(group.get_command(context, name), (*path, name))
        return found

    runner = CliRunner()
    everything = commands(root, ())
    assert len(everything) > 30
    for path, command in everything:
        shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert shown.exit_code == 0, (path, shown.output)
        assert "<bool>" not in shown.output, path
        for param in command.params:
            if "--json" in getattr(param, "opts", ()):
                assert "JSON" in (param.help or ""), f"{path}: --json is not described"
    assert "<int>" in runner.invoke(app, ["deploy", "--help"], env={"COLUMNS": "200"}).output


def test_a_command_imports_only_its_own_module() -> None:
    """`shipyard batch` starts without importing the feature store, monitoring or the server."""
    probe = (
        "import sys\n"
        "from shipyard.cli import main\n"
        "sys.argv = ['shipyard', *sys.argv[1:]]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('shipyard.features', 'shipyard.monitoring', 'shipyard.serving', 'scipy')\n"
        "print('loaded:' + ','.join(sorted(m for m in heavy if m in sys.modules)))\n"
    )

    def imported(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, check=True
        )
        return done.stdout.rsplit("loaded:", 1)[1].strip()

    assert imported("--version") == ""
    typo = subprocess.run(
        [sys.executable, "-m", "shipyard", "modls", "list"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert typo.returncode == 2
    assert "Did you mean 'models'?" in typo.stderr
    assert imported("batch", "--help") == ""
    assert "shipyard.features" in imported("features", "--help")


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("models", "show", "nope"), 3, "no model named 'nope'"),
        (("models", "show", "fraud-detector:9"), 3, "no version 9; versions are 1-2"),
        (("models", "show", "bad name"), 2, "not allowed"),
        (("predict", "fraud-detector", "--input", "missing.json"), 2, "does not exist"),
        (
            ("models", "register", "model.xyz", "--name", "m", "--sample", "s.csv"),
            2,
            "does not exist",
        ),
    ],
)
def test_errors_print_one_line_and_exit_with_a_meaningful_code(
    home: Path, args: tuple[str, ...], code: int, fragment: str
) -> None:
    result = shipyard(home, *args)
    assert result.returncode == code
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_json_input_is_an_input_error(home: Path) -> None:
    result = shipyard(home, "predict", "fraud-detector", "--input", "-", stdin="{nope")
    assert result.returncode == 2
    assert "stdin is not valid JSON" in result.stderr


def test_schema_violation_from_the_cli_names_the_field(
    home: Path, fraud_sample: pd.DataFrame
) -> None:
    record = dict(records(fraud_sample.iloc[:1])[0], hour_of_day="noon")
    result = shipyard(home, "predict", "fraud-detector", "--input", "-", stdin=json.dumps(record))
    assert result.returncode == 2
    assert "instances[0].hour_of_day: must be an integer" in result.stderr


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    upgraded = shipyard(tmp_path, "db", "upgrade", "--json")
    assert upgraded.returncode == 0, upgraded.stderr
    assert json.loads(upgraded.stdout)["to"] is not None
    current = json.loads(shipyard(tmp_path, "db", "current", "--json").stdout)
    assert current["current"] == current["head"]


def test_keys_are_created_once_listed_without_secrets_and_revoked(home: Path) -> None:
    created = shipyard(
        home,
        "keys",
        "create",
        "--scope",
        "predict",
        "--model",
        "fraud-detector",
        "--rate",
        "600/min",
        "--name",
        "pos",
        "--json",
    )
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)
    key_id, token = body["key"]["id"], body["token"]
    assert token.startswith(f"sy_{key_id}_")
    assert body["key"]["rate_per_second"] == 10
    listed = shipyard(home, "keys", "list", "--json")
    assert token not in listed.stdout
    assert key_id in {k["id"] for k in json.loads(listed.stdout)}
    table = shipyard(home, "keys", "list").stdout
    assert "pos" in table
    assert "10/s (burst 10)" in table
    assert shipyard(home, "keys", "revoke", key_id).returncode == 0
    assert key_id not in {
        k["id"] for k in json.loads(shipyard(home, "keys", "list", "--json").stdout)
    }
    bad = shipyard(home, "keys", "create", "--scope", "predict", "--rate", "lots")
    assert bad.returncode == 2
    assert "e.g. 100/s" in bad.stderr


def test_deploy_canary_status_and_rollback(home: Path) -> None:
    first = json.loads(
        shipyard(home, "deploy", "fraud-detector", "--version", "1", "--json").stdout
    )
    assert first["variants"] == [{"version": 1, "weight": 100.0, "role": "primary"}]
    canary = shipyard(
        home,
        "deploy",
        "fraud-detector",
        "--version",
        "2",
        "--canary",
        "5",
        "--routing-field",
        "customer_id",
    )
    assert canary.returncode == 0, canary.stderr
    assert "1 primary 95% + 2 canary 5%" in canary.stdout
    status = shipyard(home, "deploy", "fraud-detector", "--status")
    assert "1 primary 95% + 2 canary 5%" in status.stdout
    assert "customer_id" in status.stdout
    back = json.loads(shipyard(home, "deploy", "fraud-detector", "--rollback", "--json").stdout)
    assert back["variants"] == [{"version": 1, "weight": 100.0, "role": "primary"}]
    refused = shipyard(home, "deploy", "fraud-detector", "--version", "1", "--canary", "5")
    assert refused.returncode == 4
    assert "already the primary" in refused.stderr
    missing = shipyard(home, "deploy", "fraud-detector")
    assert missing.returncode == 2
    assert "say which version to deploy" in missing.stderr
    listed = shipyard(home, "deploy", "fraud-detector", "--history")
    assert listed.returncode == 0, listed.stderr
    assert "fraud-detector deployments, newest first" in listed.stdout
    assert "1 primary 95% + 2 canary 5%" in listed.stdout  # the rolled-back revision is listed
    revisions = json.loads(shipyard(home, "deploy", "fraud-detector", "--history", "--json").stdout)
    assert [d["revision"] for d in revisions["history"]] == [3, 2, 1]
    now = shipyard(home, "deploy", "fraud-detector", "--status")
    assert "1 primary 100%" in now.stdout
    assert "2 earlier deployment(s): shipyard deploy fraud-detector --history" in now.stdout
    assert shipyard(home, "deploy", "fraud-detector", "--history", "--stop").returncode == 2


def test_a_rollback_with_nothing_to_return_to_points_at_the_history(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    home = tmp_path / "home"
    register = ("models", "register", str(files["model"]), "--name", "solo", "--sample", str(files["sample"]))  # fmt: skip
    assert shipyard(home, *register).returncode == 0
    assert shipyard(home, "deploy", "solo", "--version", "1").returncode == 0
    refused = shipyard(home, "deploy", "solo", "--rollback")
    assert refused.returncode == 4, refused.stderr
    hint = "shipyard deploy solo --history"
    assert hint in refused.stderr
    followed = shipyard(home, *hint.split()[1:])
    assert followed.returncode == 0, followed.stderr
    assert "1 primary 100%" in followed.stdout


def test_a_failed_register_leaves_nothing_and_models_can_be_removed_again(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    home = tmp_path / "home"
    text = tmp_path / "not-a-model.joblib"
    text.write_text("amount,label\n1,0\n")
    failed = shipyard(
        home, "models", "register", str(text), "--name", "bc", "--sample", str(files["sample"])
    )
    assert failed.returncode != 0
    assert json.loads(shipyard(home, "models", "list", "--json").stdout) == []
    register = ("models", "register", str(files["model"]), "--name", "bc", "--sample", str(files["sample"]))  # fmt: skip
    assert json.loads(shipyard(home, *register, "--json").stdout)["version"] == 1
    assert shipyard(home, *register).returncode == 0
    assert shipyard(home, "models", "alias", "bc", "2", "staging").returncode == 0
    removed = shipyard(home, "models", "alias", "bc", "staging", "--remove", "--json")
    assert json.loads(removed.stdout) == {
        "name": "bc", "alias": "staging", "version": 2, "previous": 2, "removed": True,
    }  # fmt: skip
    assert shipyard(home, "models", "archive", "bc", "2").returncode == 0
    assert shipyard(home, "models", "unarchive", "bc", "2").returncode == 0
    asked = shipyard(home, "models", "delete", "bc:2")
    assert asked.returncode == 2
    assert "needs --yes" in asked.stderr
    assert json.loads(shipyard(home, "models", "delete", "bc:2", "--yes", "--json").stdout) == {
        "model": "bc",
        "versions": [2],
    }
    assert shipyard(home, "deploy", "bc", "--version", "1").returncode == 0
    refused = shipyard(home, "models", "delete", "bc", "--yes")
    assert refused.returncode == 4
    assert "shipyard deploy bc --stop" in refused.stderr
    assert "stopped" in shipyard(home, "deploy", "bc", "--stop").stdout
    assert shipyard(home, "models", "delete", "bc", "--yes").returncode == 0
    assert json.loads(shipyard(home, "models", "list", "--json").stdout) == []


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("table.joblib", b"amount,label\n1,0\n", "is not a joblib/pickle file of a model"),
        ("truncated.joblib", None, "is not a joblib/pickle file of a model"),
        ("garbage.onnx", b"not an onnx graph", "is not an ONNX model"),
        ("notes.txt", b"hello world\n", "is not a LightGBM model in its text format"),
        ("settings.json", b'{"a": 1}', "is not an XGBoost model in its JSON format"),
    ],
)
def test_a_file_that_is_not_the_model_its_name_says_gets_a_message_and_exit_2(
    tmp_path: Path, files: dict[str, Path], name: str, content: bytes | None, says: str
) -> None:
    bad = tmp_path / name
    whole = files["model"].read_bytes()
    bad.write_bytes(content if content is not None else whole[: len(whole) // 2])
    answer = shipyard(tmp_path / "home", "models", "register", str(bad), "--name", "bc")
    assert answer.returncode == 2
    assert says in " ".join(answer.stderr.split())
    assert name in answer.stderr
    assert "Traceback" not in answer.stderr + answer.stdout


def test_an_mlflow_model_with_a_signature_registers_from_the_cli_without_a_sample(
    tmp_path: Path, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    import mlflow.sklearn
    from mlflow.models import infer_signature

    source = tmp_path / "fraud-mlflow"
    mlflow.sklearn.save_model(
        fraud_model,
        str(source),
        signature=infer_signature(fraud_sample),
        input_example=fraud_sample.head(5),
        skops_trusted_types=["numpy.dtype"],  # MLflow 3 asks the saver of this pipeline to
        pip_requirements=[],
    )
    home = tmp_path / "home"
    done = shipyard(home, "models", "register", str(source), "--name", "fraud", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["signature"]["columns"][0]["name"] == fraud_sample.columns[0]
    scored = shipyard(
        home, "predict", "fraud:1", "--input", "-", "--json",
        stdin=json.dumps({"instances": records(fraud_sample.iloc[:2])}),
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    scores = [p["score"] for p in json.loads(scored.stdout)["predictions"]]
    assert scores == pytest.approx(fraud_model.predict_proba(fraud_sample.iloc[:2])[:, 1], abs=1e-5)
