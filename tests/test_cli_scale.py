"""`joint score` as a job (kill and resume, shards, SIGINT, unwritable or full outputs, names the
terminal cannot print), `joint merge` and `joint filter` - through the real command line."""

import csv
import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from joint_core import NaturalnessScorer
from joint_core.cli import main as _main
from joint_core.stream import read_rows

AXES = ("technical", "rationality", "naturalness")


def _one_thread(args):
    """Every `joint score` of this module runs the model on one thread: the runs are compared bit
    for bit, and a float sum split over another number of threads can differ in its last bit (the
    default thread count follows the worker count and the machine's cores)."""
    args = [str(a) for a in args]
    if args[:1] == ["score"] and "--threads" not in args:
        args = args[:1] + ["--threads", "1"] + args[1:]
    return args


def main(argv):
    return _main(_one_thread(argv))


def joint(*args, env=None, timeout=600, **kw):
    """The installed command in a subprocess (a real process, killable)."""
    return subprocess.Popen([sys.executable, "-m", "joint_core", *_one_thread(args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, **(env or {})}, **kw)


def run(*args, **kw):
    p = joint(*args, **kw)
    out, err = p.communicate(timeout=600)
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def many(tmp_path_factory, photos):
    """60 small images in two folders (and one broken file)."""
    d = tmp_path_factory.mktemp("many") / "imgs"
    for sub in ("a", "b/c"):
        (d / sub).mkdir(parents=True)
    names = ["astronaut", "coffee", "chelsea", "rocket"]
    for i in range(60):
        img = Image.fromarray(photos[names[i % 4]]).resize((40 + (i % 7) * 6, 36 + (i % 5) * 4))
        img.save(d / ("a" if i % 3 else "b/c") / f"{i:03d}.png")
    (d / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    return d


@pytest.fixture(scope="module")
def reference(many, tiny_model_dir, tmp_path_factory):
    """One uninterrupted run: source -> row."""
    out = tmp_path_factory.mktemp("ref") / "ref.csv"
    assert main(["score", str(many), "-r", "-m", str(tiny_model_dir), "-o", str(out), "-q", "--workers", "0"]) == 1
    return {r["source"]: r for r in read_rows(str(out))}


def _by_source(path):
    rows = list(read_rows(str(path)))
    return rows, {r["source"]: r for r in rows}


# --------------------------------------------------------------------------------------------
# kill and resume
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [".csv", ".parquet"])
def test_sigkill_then_resume_scores_every_input_exactly_once(many, tiny_model_dir, reference, tmp_path, fmt):
    if fmt == ".parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"s{fmt}"
    args = ["score", many, "-r", "-m", tiny_model_dir, "-o", out, "-b", "2", "--workers", "1", "-q"]
    p = joint(*args)
    deadline = time.time() + 300
    while time.time() < deadline:   # kill as soon as a few batches are on disk, in the middle of the run
        try:
            n = sum(1 for _ in read_rows(str(out)))
        except Exception:  # noqa: BLE001 - the file may not exist yet
            n = 0
        if n >= 6 or p.poll() is not None:
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    before = sum(1 for _ in read_rows(str(out)))
    assert 0 < before < len(reference), "the run ended before it could be killed"
    code, _, err = run(*args, "--resume")
    assert code == 1, err                                   # broken.png: some failed, the rest scored
    rows, got = _by_source(out)
    assert len(rows) == len(got) == len(reference)          # every input exactly once
    assert got == reference                                 # the same scores as an uninterrupted run
    meta = json.loads((out / "_joint.json" if fmt == ".parquet" else tmp_path / f"s{fmt}.joint.json").read_text())
    assert meta["finished"] and meta["rows"] == len(reference)


@pytest.fixture(scope="module")
def lots(photos, tmp_path_factory):
    """600 small images: a job that lasts long enough to be interrupted on an idle machine (61
    images were scored before the signal arrived on CI's)."""
    d = tmp_path_factory.mktemp("lots") / "imgs"
    d.mkdir()
    img = photos["astronaut"]
    for i in range(600):
        Image.fromarray(img[(i % 20) * 8:(i % 20) * 8 + 48, (i // 20) * 8:(i // 20) * 8 + 48]).save(d / f"{i:03d}.png")
    return d


def test_sigint_stops_cleanly_and_says_how_to_resume(lots, tiny_model_dir, tmp_path):
    ref = tmp_path / "ref.csv"
    assert main(["score", str(lots), "-m", str(tiny_model_dir), "-o", str(ref), "-q", "--workers", "0"]) == 0
    reference = {r["source"]: r for r in read_rows(str(ref))}
    out = tmp_path / "s.jsonl"
    args = ["score", lots, "-m", tiny_model_dir, "-o", out, "-b", "2", "--workers", "1", "-q"]
    # Ctrl-C as in a terminal: a runner started in the background (nohup, `&`) passes SIGINT on
    # as ignored, and Python then never raises KeyboardInterrupt; that is the launcher's choice,
    # not what this test is about
    p = joint(*args, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while not out.exists() or out.stat().st_size < 300:
        assert p.poll() is None, "finished before the interrupt"
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    err = err.decode()
    assert p.returncode == 130, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    assert err.count("rows scored so far are in") == 1
    resume = err.split("resume with:")[1].split("\n")[1].split()
    assert resume[0] == "joint" and resume[-1] == "--resume"
    code, _, _ = run(*resume[1:])
    assert code == 0
    rows, got = _by_source(out)
    assert len(rows) == len(reference) == 600 and got == reference


# --------------------------------------------------------------------------------------------
# --out that cannot be written (issue 17, item 3)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["folder", "under_a_file", "proc"])
def test_unwritable_out_is_refused_before_scoring(many, tiny_model_dir, tmp_path, capsys, where):
    (tmp_path / "file").write_text("x")
    out = {"folder": tmp_path, "under_a_file": tmp_path / "file" / "s.csv", "proc": "/proc/joint.csv"}[where]
    assert main(["score", str(many / "a" / "001.png"), "-m", str(tiny_model_dir), "-o", str(out)]) == 2
    cap = capsys.readouterr()
    assert str(out) in cap.err and "Traceback" not in cap.err
    assert "technical" not in cap.out                       # nothing was scored


def _limit_file_size(limit):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # a full disk: writes fail, nothing dies
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


@pytest.mark.slow
def test_a_full_disk_mid_run_keeps_what_was_written(many, tiny_model_dir, reference, tmp_path):
    out = tmp_path / "s.csv"
    args = ["score", many, "-r", "-m", tiny_model_dir, "-o", out, "-b", "4", "--workers", "0", "-q"]
    p = joint(*args, preexec_fn=_limit_file_size(2000))
    _, err = p.communicate(timeout=600)
    err = err.decode()
    assert p.returncode == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 + err.count("skipped")
    assert str(out) in err and "rows written before are kept" in err and "--resume" in err
    kept = list(read_rows(str(out)))
    assert 0 < len(kept) < len(reference) and os.path.getsize(out) <= 2000
    assert all(reference[r["source"]] == r for r in kept)   # whole rows, right scores
    code, _, err = run(*args, "--resume")
    assert code == 1, err
    rows, got = _by_source(out)
    assert len(rows) == len(reference) and got == reference


def test_a_failed_final_write_keeps_every_row_where_the_message_says(many, tiny_model_dir, tmp_path, capsys):
    """A .json score file is finished at the end (temporary file, then rename); when that last
    write fails, the one-line error names the file that holds every row, and --resume finishes it."""
    out = tmp_path / "s.json"
    (tmp_path / "s.json.tmp").mkdir()                      # the final write cannot happen
    imgs = [str(many / "a" / f"{i:03d}.png") for i in (1, 2, 4)]
    assert main(["score", *imgs, "-m", str(tiny_model_dir), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    partial = str(out) + ".partial"
    assert f"all 3 rows are kept in {partial}" in err and "--resume" in err
    assert sorted(r["source"] for r in read_rows(str(out))) == sorted(imgs)   # read from the partial file
    assert not out.exists()
    (tmp_path / "s.json.tmp").rmdir()
    assert main(["score", *imgs, "-m", str(tiny_model_dir), "-o", str(out), "-q", "--resume"]) == 0
    assert sorted(r["source"] for r in json.loads(out.read_text())) == sorted(imgs)
    assert not os.path.exists(partial)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_before_scoring(many, tiny_model_dir, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["score", str(many / "a" / "001.png"), "-m", str(tiny_model_dir), "-o", str(ro / "s.csv")]) == 2
    finally:
        ro.chmod(0o755)
    cap = capsys.readouterr()
    assert str(ro / "s.csv") in cap.err and "technical" not in cap.out


def test_existing_out_needs_resume_or_overwrite_and_model_must_match(many, tiny_model_dir, tmp_path, capsys,
                                                                     tmp_path_factory):
    out = tmp_path / "s.csv"
    one = str(many / "a" / "001.png")
    assert main(["score", one, "-m", str(tiny_model_dir), "-o", str(out), "-q"]) == 0
    assert main(["score", one, "-m", str(tiny_model_dir), "-o", str(out), "-q"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["score", one, "-m", str(tiny_model_dir), "-o", str(out), "-q", "--resume"]) == 0
    assert len(list(read_rows(str(out)))) == 1
    # another model: a second tiny one (other weights) - its numbers do not matter, so not the shipped default
    torch.manual_seed(1)
    other = tmp_path_factory.mktemp("other") / "model"
    NaturalnessScorer.from_config("tiny-test", device="cpu").save_pretrained(other)
    assert main(["score", one, "-m", str(other), "-o", str(out), "-q", "--resume"]) == 2
    assert "another model" in capsys.readouterr().err
    assert main(["score", one, "-m", str(tiny_model_dir), "-o", str(out), "-q", "--resume", "--shard", "0/2"]) == 2
    assert "--shard" in capsys.readouterr().err
    # a run that fails before scoring leaves no file behind, so it can simply be run again
    new = tmp_path / "new.csv"
    assert main(["score", one, "-m", str(tmp_path / "no-model"), "-o", str(new)]) == 2
    assert not new.exists() and sorted(os.listdir(tmp_path)) == [".s.csv.lock", "s.csv", "s.csv.joint.json"]


# --------------------------------------------------------------------------------------------
# names the terminal cannot print (issue 17, item 4)
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_names_that_are_not_utf8_round_trip_and_print_escaped_under_any_locale(tiny_model_dir, tmp_path, photos):
    pytest.importorskip("pyarrow")
    d = tmp_path / "odd"
    d.mkdir()
    names = [b"bad-\xff\xfe.png", "caf\u00e9-\u6f22.png".encode(), b"esc-\x1b[31m-red.png", b"plain.png"]
    for i, n in enumerate(names):
        Image.fromarray(photos["coffee"][: 40 + i, :50]).save(os.path.join(os.fsencode(d), n))
    real = {os.fsdecode(os.path.join(os.fsencode(d), n)) for n in names}
    env = {"PYTHONIOENCODING": "ascii", "LC_ALL": "C", "LANG": "C"}
    for fmt in (".csv", ".jsonl", ".parquet", ".json"):
        out = tmp_path / f"s{fmt}"
        code, stdout, err = run("score", d, "-m", tiny_model_dir, "-o", out, "--workers", "0", env=env)
        assert code == 0, err
        assert "Traceback" not in err
        assert "bad-\\xff\\xfe.png" in stdout and "caf\\xe9-\\u6f22.png" in stdout and "\x1b" not in stdout
        assert "4/4 images scored" in stdout
        got = {r["source"] for r in read_rows(str(out))}
        assert got == real, fmt                               # the names as they are on disk
        assert all(os.path.exists(s) for s in got)
    # and back in: a list of such names, on standard input
    lst = b"\n".join(os.fsencode(s) for s in sorted(real)) + b"\n"
    p = joint("score", "--files-from", "-", "-m", tiny_model_dir, "-o", tmp_path / "l.csv", "-q",
              env=env, stdin=subprocess.PIPE)
    _, err = p.communicate(lst, timeout=600)
    assert p.returncode == 0, err
    assert {r["source"] for r in read_rows(str(tmp_path / "l.csv"))} == real


# --------------------------------------------------------------------------------------------
# shards and merge
# --------------------------------------------------------------------------------------------


def test_shards_then_merge_give_the_unsharded_result(many, tiny_model_dir, reference, tmp_path, capsys):
    parts = []
    for i in range(3):
        part = tmp_path / f"part{i}.jsonl"
        assert main(["score", str(many), "-r", "-m", str(tiny_model_dir), "-o", str(part), "-q",
                     "--shard", f"{i}/3", "--workers", "0"]) in (0, 1)
        parts.append(str(part))
    sizes = [len(list(read_rows(p))) for p in parts]
    assert sum(sizes) == len(reference) and max(sizes) - min(sizes) <= 1
    merged = tmp_path / "all.csv"
    assert main(["merge", *parts, "-o", str(merged)]) == 0
    # more shards than inputs: the empty ones still write their part, and merge takes them
    one = str(many / "a" / "001.png")
    tiny = [str(tmp_path / f"t{i}.jsonl") for i in range(2)]
    for i, t in enumerate(tiny):
        assert main(["score", one, "-m", str(tiny_model_dir), "-o", t, "-q", "--shard", f"{i}/2"]) == 0
    assert main(["merge", *tiny, "-o", str(tmp_path / "t.csv"), "-q"]) == 0
    assert [r["source"] for r in read_rows(str(tmp_path / "t.csv"))] == [one]
    rows, got = _by_source(merged)
    assert len(rows) == len(reference) and got == reference
    capsys.readouterr()

    # a missing shard, a shard given twice, a part missing rows, a part with a doubled row
    assert main(["merge", *parts[:2], "-o", str(tmp_path / "x.csv")]) == 2
    assert "2/3 missing" in capsys.readouterr().err
    assert main(["merge", parts[0], parts[0], parts[1], parts[2], "-o", str(tmp_path / "x.csv")]) == 2
    assert "given twice" in capsys.readouterr().err
    lines = open(parts[1], "rb").read().splitlines(keepends=True)
    short, doubled = tmp_path / "short.jsonl", tmp_path / "doubled.jsonl"
    short.write_bytes(b"".join(lines[:-2]))
    doubled.write_bytes(b"".join(lines + lines[:1]))
    for bad in (short, doubled):
        os.link(parts[1] + ".joint.json", str(bad) + ".joint.json")
    assert main(["merge", parts[0], str(short), parts[2], "-o", str(tmp_path / "x.csv")]) == 2
    assert "2 of its" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
    assert main(["merge", parts[0], str(doubled), parts[2], "-o", str(tmp_path / "x.csv")]) == 2
    assert "doubled row" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
    assert main(["merge", parts[0], str(short), parts[2], "-o", str(tmp_path / "x.csv"), "--allow-incomplete"]) == 1
    assert len(list(read_rows(str(tmp_path / "x.csv")))) == len(reference) - 2
    # and a resumed shard fills the gap
    assert main(["score", str(many), "-r", "-m", str(tiny_model_dir), "-o", str(short), "-q", "--shard", "1/3",
                 "--resume", "--workers", "0"]) in (0, 1)
    assert main(["merge", parts[0], str(short), parts[2], "-o", str(tmp_path / "y.csv")]) == 0
    assert _by_source(tmp_path / "y.csv")[1] == reference


# --------------------------------------------------------------------------------------------
# --sort / --top on a streamed run, inputs from tables and lists
# --------------------------------------------------------------------------------------------


def test_sort_and_top_are_applied_to_the_file_at_the_end(many, tiny_model_dir, reference, tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert main(["score", str(many), "-r", "-m", str(tiny_model_dir), "-o", str(out), "--top", "5",
                 "--sort", "technical", "--workers", "0"]) == 1
    rows = list(read_rows(str(out)))
    best = sorted((r for r in reference.values() if r["error"] is None), key=lambda r: -r["technical"])[:5]
    assert rows == best
    meta = json.loads((tmp_path / "s.csv.joint.json").read_text())
    assert meta["rows"] == 5 and meta["selection"]["rows_before"] == len(reference)
    printed = [line.split()[-1] for line in capsys.readouterr().out.splitlines() if line.endswith(".png")]
    assert printed == [r["source"] for r in best]


def test_files_from_and_csv_tables(many, tiny_model_dir, reference, tmp_path):
    files = sorted(reference)[:7]
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(files) + "\n")
    table = tmp_path / "t.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "prompt"])
        w.writerows([p, "x"] for p in files)
    for extra in (["--files-from", str(lst)], [str(table), "--column", "path"]):
        out = tmp_path / f"o{len(extra)}.csv"
        assert main(["score", *extra, "-m", str(tiny_model_dir), "-o", str(out), "-q", "--workers", "2"]) in (0, 1)
        assert {r["source"]: r for r in read_rows(str(out))} == {k: reference[k] for k in files}


# --------------------------------------------------------------------------------------------
# joint filter
# --------------------------------------------------------------------------------------------


def _tree(d):
    return {str(p.relative_to(d)): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in d.rglob("*") if p.is_file()}


@pytest.mark.parametrize("mode", ["copy", "hardlink", "symlink"])
def test_filter_mirrors_the_layout_and_never_touches_sources(many, reference, tmp_path, mode, capsys):
    scores = tmp_path / "s.csv"
    from joint_core.stream import write_rows

    write_rows(str(scores), iter(reference.values()))
    before = _tree(many)
    dest = tmp_path / "kept"
    assert main(["filter", str(scores), "--to", str(dest), "--mode", mode, "--top-percent", "20",
                 "--per-folder"]) == 0
    assert _tree(many) == before                               # sources untouched, none moved
    kept = sorted(str(p.relative_to(dest)) for p in dest.rglob("*.png"))
    groups = {}
    for r in reference.values():
        groups.setdefault(os.path.dirname(r["source"]), []).append(r)
    want = []
    for rows in groups.values():
        scored = sorted((r for r in rows if r["error"] is None), key=lambda r: -r["naturalness"])
        want += [os.path.relpath(r["source"], many) for r in scored[: -(-len(scored) * 20 // 100)]]
    assert kept == sorted(want)                                # 20 % of each folder, layout mirrored
    for rel in kept:
        target = dest / rel
        if mode == "symlink":
            assert target.is_symlink() and target.resolve() == (many / rel).resolve()
        elif mode == "hardlink":
            assert target.stat().st_ino == (many / rel).stat().st_ino
        else:
            assert target.read_bytes() == (many / rel).read_bytes() and not target.is_symlink()
    # a second run finds everything there; a different file in the way is never overwritten
    victim = dest / kept[0]
    if mode == "copy":
        victim.unlink()
        victim.write_bytes(b"mine")
        assert main(["filter", str(scores), "--to", str(dest), "--top-percent", "20", "--per-folder"]) == 1
        assert victim.read_bytes() == b"mine" and "not overwritten" in capsys.readouterr().err
    assert _tree(many) == before


def test_filter_thresholds_groups_and_lists(many, reference, tmp_path, capsys):
    from joint_core.stream import write_rows

    scores = tmp_path / "s.jsonl"
    rows = [dict(r, prompt=("p1" if i % 2 else "p2")) for i, r in enumerate(reference.values())]
    write_rows(str(scores), iter(reference.values()))
    nat = sorted(r["naturalness"] for r in reference.values() if r["error"] is None)
    cut_n, cut_t = nat[len(nat) // 2], sorted(r["technical"] for r in reference.values() if r["error"] is None)[10]
    lst = tmp_path / "kept.txt"
    assert main(["filter", str(scores), "--mode", "list", "--to", str(lst), "--min", f"naturalness={cut_n}",
                 "--min", f"technical={cut_t}"]) == 0
    listed = lst.read_text().splitlines()
    want = [r["source"] for r in reference.values()
            if r["error"] is None and r["naturalness"] >= cut_n and r["technical"] >= cut_t]
    assert listed == want and 0 < len(listed) < len(nat)
    # a group column someone added to the file
    grouped = tmp_path / "g.csv"
    with open(grouped, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["source", "technical", "rationality", "naturalness", "error", "prompt"],
                           extrasaction="ignore")   # a file without the warning column (older, or hand-made)
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    assert main(["filter", str(grouped), "--mode", "list", "--top", "1", "--group-column", "prompt"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    for p in ("p1", "p2"):
        best = max((r for r in rows if r["prompt"] == p and r["error"] is None), key=lambda r: r["naturalness"])
        assert best["source"] in out
    assert main(["filter", str(scores), "--mode", "list"]) == 2           # no criterion
    assert main(["filter", str(scores), "--top", "3"]) == 2               # copy needs --to
    assert main(["filter", str(grouped), "--mode", "list", "--top", "1", "--group-column", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
