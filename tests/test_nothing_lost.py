"""Nothing lost, round 3 (issue 23): every command that writes refuses to destroy what it did not
make, resuming never drops a row, ids that are not local paths are never opened as local paths,
and damaged job records, odd tar members, hostile names and long list lines get named errors.

Each test reproduces one item of the issue as a user meets it, through the real command line
(in-process, with the tiny model), and checks both the exit code and that the files are intact.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from joint_core.cli import main
from joint_core.stream import read_rows, write_rows
from joint_core.stream.sources import MAX_LIST_LINE, FileList, InputError, TarShard


def _png(path: Path, seed: int = 0, size=(48, 40)) -> Path:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3)
    img = (base * 0.7 + rng.integers(0, 60, base.shape)).clip(0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


@pytest.fixture
def imgs(tmp_path):
    d = tmp_path / "imgs"
    for i in range(4):
        _png(d / f"a{i}.png", seed=i)
    return d


def _score(tiny_model_dir, *args):
    return main(["score", *map(str, args), "-m", str(tiny_model_dir), "-q", "--no-progress"])


def _snapshot(*paths):
    out = {}
    for p in paths:
        p = Path(p)
        for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())):
            out[str(f)] = f.read_bytes()
    return out


# --------------------------------------------------------------------------------------------
# 1. commands that write never replace what they did not make, nor what they read
# --------------------------------------------------------------------------------------------


def test_filter_list_never_overwrites_an_image_or_the_score_file(tiny_model_dir, imgs, tmp_path, capsys):
    scores = tmp_path / "s.csv"
    assert _score(tiny_model_dir, imgs, "--out", scores) == 0
    before = _snapshot(imgs, scores, str(scores) + ".joint.json")
    for to, extra in ((imgs / "a1.png", []), (scores, []), (scores, ["--overwrite"]),
                      (str(scores) + ".joint.json", ["--overwrite"])):
        code = main(["filter", str(scores), "--min", "naturalness=-100", "--mode", "list", "--to", str(to), *extra])
        assert code == 2, to
        err = capsys.readouterr().err
        assert str(to) in err and "Traceback" not in err
    assert _snapshot(imgs, scores, str(scores) + ".joint.json") == before
    # a new list file is written; again only with --overwrite
    lst = tmp_path / "kept.txt"
    assert main(["filter", str(scores), "--min", "naturalness=-100", "--mode", "list", "--to", str(lst)]) == 0
    assert len(lst.read_text().splitlines()) == 4
    lst.write_text("mine\n")
    assert main(["filter", str(scores), "--min", "naturalness=-100", "--mode", "list", "--to", str(lst)]) == 2
    assert lst.read_text() == "mine\n" and "--overwrite" in capsys.readouterr().err
    assert main(["filter", str(scores), "--min", "naturalness=-100", "--mode", "list", "--to", str(lst),
                 "--overwrite"]) == 0
    assert len(lst.read_text().splitlines()) == 4
    # copy mode into a path that is a file
    assert main(["filter", str(scores), "--min", "naturalness=-100", "--to", str(lst)]) == 2
    assert len(lst.read_text().splitlines()) == 4


def test_merge_report_and_score_never_write_over_their_inputs(tiny_model_dir, imgs, tmp_path, capsys):
    scores = tmp_path / "s.csv"
    assert _score(tiny_model_dir, imgs, "--out", scores) == 0
    keep = _snapshot(scores)
    assert main(["merge", str(scores), "--out", str(scores), "--overwrite"]) == 2
    assert main(["report", str(scores), "--out", str(scores), "--overwrite"]) == 2
    assert _snapshot(scores) == keep
    # an input table is never the output, not even with --overwrite
    table = tmp_path / "t.csv"
    table.write_text("path\n" + "".join(f"{p}\n" for p in sorted(imgs.iterdir())))
    tkeep = table.read_bytes()
    assert _score(tiny_model_dir, table, "--column", "path", "--out", table, "--overwrite") == 2
    assert table.read_bytes() == tkeep
    assert "reads" in capsys.readouterr().err
    # --report: refused before any scoring when it would replace a file that is not its report
    notes = tmp_path / "notes.html"
    notes.write_text("<p>my notes</p>")
    out2 = tmp_path / "s2.csv"
    assert _score(tiny_model_dir, imgs, "--out", out2, "--report", notes) == 2
    assert notes.read_text() == "<p>my notes</p>" and not out2.exists()
    assert _score(tiny_model_dir, imgs, "--out", out2, "--report", out2) == 2
    assert not out2.exists()


def test_report_replaces_only_its_own_report(tiny_model_dir, imgs, tmp_path, capsys):
    scores = tmp_path / "s.csv"
    other = tmp_path / "o.csv"
    assert _score(tiny_model_dir, imgs, "--out", scores) == 0
    assert _score(tiny_model_dir, imgs / "a0.png", "--out", other) == 0
    page = tmp_path / "r.html"
    assert main(["report", str(scores), "--out", str(page), "-q"]) == 0
    made = page.stat().st_mtime_ns
    time.sleep(0.01)
    assert main(["report", str(scores), "--out", str(page), "-q"]) == 0        # a rerun: its own report
    assert page.stat().st_mtime_ns != made
    assert main(["report", str(other), "--out", str(page), "-q"]) == 2         # another table's report
    assert "not made from this scores file" in capsys.readouterr().err
    assert main(["report", str(other), "--out", str(page), "-q", "--overwrite"]) == 0
    # joint score --resume --report remakes the job's own report
    assert _score(tiny_model_dir, imgs, "--out", scores, "--resume", "--report", tmp_path / "job.html") == 0
    assert _score(tiny_model_dir, imgs, "--out", scores, "--resume", "--report", tmp_path / "job.html") == 0


def test_convert_and_export_outputs_are_checked(tmp_path, capsys):
    src = tmp_path / "JOINT_2024.pth"
    src.write_bytes(b"not really")
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["convert", str(src), str(afile)]) == 2                       # a file, not a folder
    assert main(["convert", str(src), str(afile / "sub")]) == 2               # under a file
    assert main(["convert", str(src), str(tmp_path), "--overwrite"]) == 2     # holds the checkpoint
    err = capsys.readouterr().err
    assert "Traceback" not in err and afile.read_text() == "x" and src.read_bytes() == b"not really"


# --------------------------------------------------------------------------------------------
# 2. --resume keeps every row
# --------------------------------------------------------------------------------------------


def _csv_file(path: Path, lines):
    path.write_bytes(b"".join(x.encode() + b"\n" for x in lines))


HEADER = "source,technical,rationality,naturalness,error,warning"


@pytest.mark.parametrize("stray", ['note: "checked', '"checked', 'x,"a'])
def test_resume_refuses_a_stray_quote_and_leaves_the_file_as_it_was(tiny_model_dir, imgs, tmp_path, stray,
                                                                     capsys):
    out = tmp_path / "r.csv"
    rows = [f"{imgs / f'a{i}.png'},3.1,3.2,3.3,," for i in range(2)]
    _csv_file(out, [HEADER, *rows, stray, "/old/one.png,2.0,2.0,2.0,,", "/old/two.png,2.5,2.5,2.5,,"])
    before = out.read_bytes()
    code = _score(tiny_model_dir, imgs, "--out", out, "--resume")
    err = capsys.readouterr().err
    assert code == 2 and str(out) in err and "Traceback" not in err
    assert out.read_bytes() == before


def test_resume_still_cuts_the_torn_row_of_a_killed_run_and_says_so(tiny_model_dir, imgs, tmp_path, capsys):
    ref = tmp_path / "ref.csv"
    assert _score(tiny_model_dir, imgs, "--out", ref) == 0
    whole = ref.read_bytes().splitlines(keepends=True)
    for torn in (b"/x/a3.png,3.1,3.", b'"/x/we\nird', b"sour"):
        out = tmp_path / "t.csv"
        body = whole[:3] if torn != b"sour" else []
        out.write_bytes(b"".join(body) + torn)
        assert _score(tiny_model_dir, imgs, "--out", out, "--resume") == 0
        assert "removed the unfinished last row" in capsys.readouterr().err
        got = {r["source"]: r for r in read_rows(str(out))}
        assert got == {r["source"]: r for r in read_rows(str(ref))}


def test_resume_keeps_a_whole_last_row_without_its_newline(tiny_model_dir, imgs, tmp_path):
    out = tmp_path / "r.jsonl"
    assert _score(tiny_model_dir, imgs / "a0.png", "--out", out) == 0
    hand = {"source": "/elsewhere/kept.png", "technical": 3.0, "rationality": 3.0, "naturalness": 3.0,
            "error": None, "warning": None}
    with open(out, "ab") as f:
        f.write(json.dumps(hand).encode())
    assert _score(tiny_model_dir, imgs, "--out", out, "--resume") == 0
    sources = [r["source"] for r in read_rows(str(out))]
    assert "/elsewhere/kept.png" in sources and len(sources) == 5 and len(set(sources)) == 5
    # a JSON line that is not one joint writes is not cut either
    out2 = tmp_path / "r2.jsonl"
    assert _score(tiny_model_dir, imgs / "a0.png", "--out", out2) == 0
    with open(out2, "ab") as f:
        f.write(b"my note")
    before = out2.read_bytes()
    assert _score(tiny_model_dir, imgs, "--out", out2, "--resume") == 2
    assert out2.read_bytes() == before


def test_resume_refuses_a_file_that_is_not_a_score_file_at_all(tiny_model_dir, imgs, tmp_path):
    out = tmp_path / "mine.csv"
    out.write_bytes(b"hello world")   # one line, no newline: not a torn header
    assert _score(tiny_model_dir, imgs, "--out", out, "--resume") == 2
    assert out.read_bytes() == b"hello world"


# --------------------------------------------------------------------------------------------
# 3. ids that are not local paths are never opened as local paths
# --------------------------------------------------------------------------------------------


def _tar(path: Path, members):
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_tar_keys_are_never_resolved_on_the_local_disk(tiny_model_dir, tmp_path, capsys):
    private = tmp_path / "x" / "private_photo"          # a local file that happens to bear the key's name
    _png(private.with_suffix(".png"), seed=9)
    os.rename(private.with_suffix(".png"), private)
    member = io.BytesIO()
    Image.fromarray(np.full((40, 48, 3), 120, np.uint8) + np.arange(48, dtype=np.uint8)[None, :, None]).save(
        member, "PNG")
    tar = tmp_path / "shard.tar"
    _tar(tar, [(f"{tmp_path}/x/private_photo.png", member.getvalue())])
    out = tmp_path / "key.csv"
    assert _score(tiny_model_dir, tar, "--out", out) == 0
    assert [r["source"] for r in read_rows(str(out))] == [str(private)]
    record = json.loads(Path(str(out) + ".joint.json").read_text())
    assert record["inputs"]["ids"] == {"paths": 0, "keys": 1}
    kept = tmp_path / "kept"
    assert main(["filter", str(out), "--min", "naturalness=-100", "--to", str(kept)]) == 2
    assert "tar members" in capsys.readouterr().err and not kept.exists()
    assert main(["filter", str(out), "--min", "naturalness=-100", "--mode", "list"]) == 0   # the ids themselves
    assert capsys.readouterr().out.splitlines() == [str(private)]
    for html_path, cmd in ((tmp_path / "r.html", ["report", str(out), "--out", str(tmp_path / "r.html")]),
                           (tmp_path / "r2.html", None)):
        if cmd is None:
            assert _score(tiny_model_dir, tar, "--report", html_path) == 0
        else:
            assert main(cmd) == 0
        page = html_path.read_text()
        assert "data:image/jpeg" not in page and "tar member" in page


def test_a_mixed_job_copies_nothing_and_a_files_job_still_copies(tiny_model_dir, imgs, tmp_path, capsys):
    member = (imgs / "a0.png").read_bytes()
    _tar(tmp_path / "s.tar", [("k1.png", member)])
    mixed = tmp_path / "m.csv"
    assert _score(tiny_model_dir, imgs, tmp_path / "s.tar", "--out", mixed) == 0
    assert main(["filter", str(mixed), "--min", "naturalness=-100", "--to", str(tmp_path / "k")]) == 2
    assert "separate score files" in capsys.readouterr().err
    files = tmp_path / "f.csv"
    assert _score(tiny_model_dir, imgs, "--out", files) == 0
    assert main(["filter", str(files), "--min", "naturalness=-100", "--to", str(tmp_path / "k2"), "-q"]) == 0
    assert len(list((tmp_path / "k2").rglob("*.png"))) == 4


# --------------------------------------------------------------------------------------------
# 4. one file name never blanks the report
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["<!--<script>x.png", "<script>-->y.png", "a&amp;<![CDATA[z.png"])
def test_hostile_names_keep_the_report_data_parsable(tiny_model_dir, tmp_path, name):
    d = tmp_path / "imgs"
    _png(d / name, seed=1)
    _png(d / "plain.png", seed=2)
    out = tmp_path / "s.csv"
    assert _score(tiny_model_dir, d, "--out", out) == 0
    page = tmp_path / "r.html"
    assert main(["report", str(out), "--out", str(page), "-q"]) == 0
    text = page.read_text()
    block = re.search(r'<script type="application/json" id="joint-data">(.*?)</script>', text, re.S).group(1)
    assert "<" not in block and ">" not in block          # nothing that switches the HTML parser's state
    data = json.loads(block)
    assert sorted(os.path.basename(r["source"]) for r in data["rows"]) == sorted([name, "plain.png"])


# --------------------------------------------------------------------------------------------
# 5. long list lines are linear and never echoed whole
# --------------------------------------------------------------------------------------------


def test_files_from_with_a_huge_line_is_fast_named_and_not_echoed(tmp_path, imgs):
    lst = tmp_path / "list.txt"
    with open(lst, "wb") as f:
        f.write(b"z" * (32 << 20))                       # 32 MB without a newline
        f.write(b"\n" + os.fsencode(str(imgs / "a0.png")) + b"\n")
    t0 = time.perf_counter()
    samples = list(FileList(str(lst)).samples())
    assert time.perf_counter() - t0 < 10
    assert [s.path for s in samples[1:]] == [str(imgs / "a0.png")]
    assert samples[0].error is not None and f"{MAX_LIST_LINE:,} bytes" in samples[0].error
    assert len(samples[0].error) < 400                  # the "name" is not echoed
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as f:
        f.truncate(256 << 20)                            # find -print0 output read without --null
    with pytest.raises(InputError, match="--null"):
        FileList(str(sparse))
    t0 = time.perf_counter()
    assert list(FileList(str(sparse), null=True).samples()) == []
    assert time.perf_counter() - t0 < 20


# --------------------------------------------------------------------------------------------
# 6. a damaged job record is one named error
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", [{"model": "x"}, {"shard": 3}, {"inputs": [1]}, {"model": {"ranking": 5}},
                                    {"rows": "many"}, {"finished": "yes"}, {"shard": [2, 1]}, "[]", b"\xff\xfe",
                                    "{" * 100000])
def test_a_damaged_job_record_is_a_named_error(tiny_model_dir, imgs, tmp_path, damage, capsys):
    out = tmp_path / "s.csv"
    assert _score(tiny_model_dir, imgs / "a0.png", "--out", out) == 0
    record = Path(str(out) + ".joint.json")
    if isinstance(damage, dict):
        meta = json.loads(record.read_text())
        meta.update(damage)
        record.write_text(json.dumps(meta))
    else:
        record.write_bytes(damage if isinstance(damage, bytes) else damage.encode())
    rows = out.read_bytes()
    for cmd in (["score", str(imgs), "-m", str(tiny_model_dir), "-q", "--out", str(out), "--resume"],
                ["merge", str(out), "--out", str(tmp_path / "m.csv")],
                ["filter", str(out), "--top", "1", "--mode", "list"],
                ["report", str(out), "--out", str(tmp_path / "r.html")]):
        assert main(cmd) == 2, cmd
        err = capsys.readouterr().err
        assert "Traceback" not in err and str(record) in err and "remove it" in err, err
    assert out.read_bytes() == rows


# --------------------------------------------------------------------------------------------
# 7. tar members that are not files are named
# --------------------------------------------------------------------------------------------


def test_tar_members_that_are_not_files_are_named(tmp_path, imgs):
    tar = tmp_path / "odd.tar"
    with tarfile.open(tar, "w") as tf:
        for name, kind, link in (("dir", tarfile.DIRTYPE, ""), ("a.png", tarfile.SYMTYPE, "/etc/passwd"),
                                 ("b.png", tarfile.LNKTYPE, "a.png"), ("c.png", tarfile.FIFOTYPE, ""),
                                 ("d.png", tarfile.CHRTYPE, ""), ("e.json", tarfile.SYMTYPE, "x")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            tf.addfile(info)
        data = (imgs / "a0.png").read_bytes()
        info = tarfile.TarInfo("f.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    src = TarShard(str(tar))
    samples = {s.key: s for s in src.samples()}
    assert sorted(samples) == ["a", "b", "c", "d", "f"]
    assert "symbolic link (to '/etc/passwd')" in samples["a"].error and "hard link" in samples["b"].error
    assert "FIFO" in samples["c"].error and "device" in samples["d"].error and samples["f"].error is None
    assert src.skipped == {f"{tar}: members that are folders, not files (never read)": 1,
                           f"{tar}: members that are symbolic links, not files (never read)": 1,
                           f"{tar}: samples without an image member": 1}


# --------------------------------------------------------------------------------------------
# 8. spreadsheet formulas: CSV cells are escaped, and read back exactly
# --------------------------------------------------------------------------------------------


def test_csv_cells_a_spreadsheet_would_run_are_escaped_and_round_trip(tmp_path):
    names = ["=HYPERLINK(\"http://x\")", "+1+1", "-2.png", "@SUM(A1)", "\tx", "'quoted", "plain.png"]
    recs = [{"source": n, "technical": -0.5, "rationality": 2.0, "naturalness": 3.0,
             "error": None if i else "=cmd|' /C calc'!A0", "warning": "-" if i == 1 else None}
            for i, n in enumerate(names)]
    out = tmp_path / "s.csv"
    write_rows(str(out), iter(recs))
    cells = list(csv.reader(open(out, newline="")))[1:]
    assert all(not c[0].startswith(("=", "+", "-", "@", "\t")) for c in cells)
    assert cells[0][4].startswith("'=") and cells[1][5] == "'-" and cells[6][0] == "plain.png"
    assert cells[0][1] == "-0.5"                              # numbers are numbers
    back = list(read_rows(str(out)))
    assert [r["source"] for r in back] == names
    assert back[0]["error"] == recs[0]["error"] and back[1]["warning"] == "-"
    from joint_core.report import read_scores

    assert [r["source"] for r in read_scores(out)] == names


# --------------------------------------------------------------------------------------------
# 9. smaller things
# --------------------------------------------------------------------------------------------


def test_bad_configs_name_their_file(tiny_model_dir, tmp_path, capsys):
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    for name, text in (("latin1", None), ("seed", dict(cfg, preprocess=dict(cfg["preprocess"], seed=2 ** 80))),
                       ("tiny", dict(cfg, preprocess=dict(cfg["preprocess"], max_side=1)))):
        d = tmp_path / name
        d.mkdir()
        for f in tiny_model_dir.iterdir():
            (d / f.name).write_bytes(f.read_bytes())
        if text is None:
            (d / "config.json").write_bytes(b'{"name": "caf\xe9"}')
        else:
            (d / "config.json").write_text(json.dumps(text))
        assert main(["info", str(d)]) == 2
        err = capsys.readouterr().err
        assert str(d / "config.json") in err and "Traceback" not in err, err
        assert {"latin1": "UTF-8", "seed": "seed", "tiny": "max_side"}[name] in err


def test_out_under_a_file_or_on_a_socket_says_so(tiny_model_dir, imgs, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert _score(tiny_model_dir, imgs, "--out", afile / "s.csv") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    sock_path = tmp_path / "s.csv"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(sock_path))
        assert _score(tiny_model_dir, imgs, "--out", sock_path) == 2
        assert "is a socket" in capsys.readouterr().err
        assert main(["filter", str(sock_path), "--top", "1", "--mode", "list"]) == 2
    finally:
        sock.close()
