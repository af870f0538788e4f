import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from joint_core.cli import main


@pytest.fixture
def folder(tmp_path, photos):
    d = tmp_path / "imgs"
    d.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(photos[name]).save(d / f"{name}.png")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (d / "readme.txt").write_text("ignored: not an image extension")
    return d


def test_score_folder_reports_bad_files_and_writes_csv(folder, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    code = main(["score", str(folder), "--model", str(tiny_model_dir), "--out", str(out), "--no-progress"])
    assert code == 1                                        # something failed, the rest scored
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "skipped" in captured.err
    assert "3/4 images scored, 1 failed" in captured.out
    assert "technical" in captured.out and "astronaut.png" in captured.out
    rows = list(csv.DictReader(out.open()))
    assert [os.path.basename(r["source"]) for r in rows] == ["astronaut.png", "broken.png", "chelsea.png", "coffee.png"]
    assert rows[1]["naturalness"] == "" and "broken.png" in rows[1]["error"]
    assert all(float(r["naturalness"]) == float(r["naturalness"]) for r in rows if not r["error"])


def test_sort_top_and_jsonl(folder, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    good = [str(folder / f"{n}.png") for n in ("astronaut", "coffee", "chelsea")]
    assert main(["score", *good, "-m", str(tiny_model_dir), "--sort", "technical", "-o", str(out), "-q"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    tech = [r["technical"] for r in rows]
    assert tech == sorted(tech, reverse=True) and len(rows) == 3
    # an existing score file is finished work: it is never replaced without --overwrite
    assert main(["score", *good, "-m", str(tiny_model_dir), "--top", "1", "-o", str(out), "-q"]) == 2
    assert "--resume" in capsys.readouterr().err and len(out.read_text().splitlines()) == 3
    assert main(["score", *good, "-m", str(tiny_model_dir), "--top", "1", "--sort", "technical",
                 "-o", str(out), "-q", "--overwrite"]) == 0
    top = [json.loads(line) for line in out.read_text().splitlines()]
    assert top == rows[:1]
    assert main(["score", *good, "-m", str(tiny_model_dir), "--top", "2", "--ascending",
                 "-o", str(tmp_path / "a.json"), "-q"]) == 0
    asc = json.loads((tmp_path / "a.json").read_text())
    nat = [r["naturalness"] for r in asc]
    assert nat == sorted(nat) and len(asc) == 2


def test_glob_patterns(folder, tiny_model_dir, capsys):
    assert main(["score", str(folder / "c*.png"), "-m", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "coffee.png" in out and "chelsea.png" in out and "astronaut.png" not in out


def test_no_model_gives_one_clear_message(folder, isolated_models, capsys):
    assert main(["score", str(folder / "coffee.png")]) == 2
    err = capsys.readouterr().err
    assert "no naturalness model found" in err and "joint convert" in err
    assert "Traceback" not in err


def test_usage_errors(folder, tiny_model_dir, tmp_path, capsys):
    assert main(["score", str(tmp_path / "nothing-here"), "-m", str(tiny_model_dir)]) == 2
    if not torch.cuda.is_available():
        assert main(["score", str(folder / "coffee.png"), "-m", str(tiny_model_dir), "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert main(["score", str(folder / "coffee.png"), "-m", str(tiny_model_dir), "--dtype", "int3"]) == 2
    assert "unknown dtype" in capsys.readouterr().err
    assert main(["score", str(folder / "coffee.png"), "-m", str(tiny_model_dir), "-o", str(tmp_path / "x.xls")]) == 2
    captured = capsys.readouterr()
    assert "unknown format" in captured.err and "rationality" not in captured.out  # refused before scoring
    with pytest.raises(SystemExit):
        main(["score", str(folder), "--batch-size", "0"])


def test_info(tiny_model_dir, capsys):
    assert main(["info", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "test_efficientnet" in out and str(tiny_model_dir) in out and "argument" in out
    assert main(["info", str(tiny_model_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["name"] == "tiny-test" and info["parameters"] > 0


def test_convert_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "something").write_text("x")
    assert main(["convert", str(tmp_path / "a.pth"), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_console_script_entry_point(folder, tiny_model_dir):
    """The installed `joint` command (or `python -m joint_core` if not on PATH)."""
    import shutil

    exe = shutil.which("joint")
    cmd = [exe] if exe else [sys.executable, "-m", "joint_core"]
    proc = subprocess.run(cmd + ["score", str(folder / "coffee.png"), "-m", str(tiny_model_dir)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "coffee.png" in proc.stdout and "1/1 images scored" in proc.stdout
