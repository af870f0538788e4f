"""`joint report` and joint_core.report / joint_core.stats, without a browser (the page itself is
tested in headless Chromium in tests/test_report_browser.py)."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from joint_core import stats
from joint_core.cli import main
from joint_core.preprocess.images import load_image
from joint_core.report import ReportError, read_scores, thumbnail, to_rows, write_html_report

AXES = ("technical", "rationality", "naturalness")


def page_data(path) -> dict:
    """The rows the page's script draws the grid from."""
    text = path.read_text(encoding="utf-8")
    return json.loads(re.search(r'<script type="application/json" id="joint-data">(.*?)</script>', text, re.S).group(1))


def decode(data_url: str) -> Image.Image:
    assert data_url.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


@pytest.fixture
def scored(tmp_path, photos, tiny_model_dir):
    """Two folders of photographs and a broken file, scored by `joint score --out scores.csv`."""
    for folder, names in (("gen-a", ("astronaut", "coffee", "chelsea")), ("gen-b", ("rocket", "coffee"))):
        (tmp_path / folder).mkdir()
        for n in names:
            pixels = photos[n][::2, ::2] if folder == "gen-b" else photos[n]
            Image.fromarray(pixels).save(tmp_path / folder / f"{n}.png")
    (tmp_path / "gen-b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "scores.csv"
    assert main(["score", str(tmp_path / "gen-a"), str(tmp_path / "gen-b"), "-m", str(tiny_model_dir),
                 "-o", str(out), "-q", "--no-progress"]) == 1             # one file failed
    return out


def test_report_of_a_scores_table(scored, tmp_path, capsys):
    out = tmp_path / "report" / "report.html"
    assert main(["report", str(scored), "--out", str(out)]) == 0
    assert re.search(r"wrote .*report\.html: 6 images \(1 not scored\), 2 groups, \d+\.\d MB", capsys.readouterr().out)
    table = list(csv.DictReader(scored.open()))
    ok = [r for r in table if not r["error"]]
    data = page_data(out)
    assert [r["source"] for r in data["rows"]] == [r["source"] for r in ok]          # table order, scored only
    for row, rec in zip(data["rows"], ok):
        assert [row[ax] for ax in AXES] == [float(rec[ax]) for ax in AXES]
        assert row["group"] == ("gen-a" if "gen-a" in rec["source"] else "gen-b")
        img = decode(row["thumb"])
        w, h = Image.open(rec["source"]).size
        assert max(img.size) == 160 and abs(img.size[0] / img.size[1] - w / h) < 0.02
    text = out.read_text()
    # the group table: each folder's mean of each axis, with an interval around it
    for group in ("gen-a", "gen-b"):
        members = [r for r in ok if f"/{group}/" in r["source"]]
        cells = re.search(rf'<tr data-group="{group}">(.*?)</tr>', text).group(1)
        assert f'<td class="num">{len(members)}</td>' in cells
        for ax in AXES:
            mean = float(np.mean([float(r[ax]) for r in members]))
            m = re.search(rf'data-axis="{ax}" data-mean="([^"]+)" data-low="([^"]+)" data-high="([^"]+)"', cells)
            assert float(m.group(1)) == pytest.approx(mean, abs=1e-12)
            assert float(m.group(2)) <= mean <= float(m.group(3))
    # what could not be scored is listed with its reason
    failed = re.search(r'<table id="failed">(.*?)</table>', text, re.S).group(1)
    assert "broken.png" in failed and "cannot" in failed.lower()


def test_the_page_is_one_offline_file(scored, tmp_path):
    out = tmp_path / "r.html"
    write_html_report(scored, out)
    text = out.read_text()
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    # every src / href is inline: no file beside the page, nothing fetched
    refs = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', text)
    assert all(r.startswith(("data:", "#")) for r in refs), refs
    assert "<link" not in text and re.search(r"<script[^>]*\bsrc=", text) is None


def test_thumbnails_are_decoded_as_the_scorer_decodes(tmp_path, photos):
    """EXIF orientation is applied (as when scoring) and 16-bit images are scaled, not clipped."""
    img = Image.fromarray(photos["coffee"])                         # 600 x 400 landscape
    exif = Image.Exif()
    exif[0x0112] = 6                                                  # "rotate 90 degrees to display"
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    scored_shape = load_image(tmp_path / "rotated.jpg").shape        # [3, 600, 400]: portrait
    thumb = decode(thumbnail(tmp_path / "rotated.jpg", 120))
    assert scored_shape[1] > scored_shape[2] and thumb.size == (80, 120)
    deep = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    t16 = np.asarray(decode(thumbnail(tmp_path / "deep.png", 64)).convert("L"), dtype=np.float64)
    assert t16.shape == (48, 64) and t16.min() < 10 and t16.max() > 245  # the full range, not clipped


def test_table_columns_are_read_by_name(tmp_path, photos):
    Image.fromarray(photos["chelsea"]).save(tmp_path / "cat.png")
    rows = [{"naturalness": "3.5", "warning": "near the threshold", "source": "cat.png", "technical": "3",
             "rationality": "4", "error": "", "generator": "sd15"},
            {"source": "gone.png", "technical": "", "rationality": "", "naturalness": "",
             "error": "gone.png: no such file", "warning": "", "generator": "sdxl"},
            {"source": "cat.png", "technical": "2", "rationality": "nan", "naturalness": "2.5", "error": "",
             "warning": "", "generator": "sdxl"}]
    csv_path = tmp_path / "s.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "s.json").write_text(json.dumps(rows))
    assert read_scores(csv_path) == read_scores(tmp_path / "s.jsonl") == read_scores(tmp_path / "s.json")
    parsed = to_rows(read_scores(csv_path))
    assert [r.scored for r in parsed] == [True, False, False]
    assert parsed[0].extra == {"warning": "near the threshold", "generator": "sd15"}
    assert parsed[1].error == "gone.png: no such file" and parsed[2].error == "no score in the table"
    out = tmp_path / "r.html"
    summary = write_html_report(csv_path, out, group_by="generator", root=tmp_path)
    assert (summary.images, summary.scored, summary.failed, summary.missing_thumbnails) == (3, 1, 2, 0)
    assert [(g.name, g.n) for g in summary.groups] == [("sd15", 1)]      # groups of scored images
    one = summary.groups[0].axes["naturalness"]
    assert one.mean == 3.5 and math.isnan(one.low) and math.isnan(one.high)   # one image: no interval
    data = page_data(out)
    assert data["rows"][0]["extra"] == {"warning": "near the threshold"}          # the group is shown once
    assert data["rows"][0]["group"] == "sd15" and data["rows"][0]["thumb"].startswith("data:image/jpeg")


def test_unusable_tables_are_clear_errors(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,score\na.png,3\n")
    with pytest.raises(ReportError, match=r"lacks the column\(s\) \['source', 'technical'"):
        write_html_report(bad, tmp_path / "r.html")
    assert main(["report", str(bad), "-o", str(tmp_path / "r.html")]) == 2
    assert "joint: error:" in capsys.readouterr().err and not (tmp_path / "r.html").exists()
    words = tmp_path / "words.csv"
    words.write_text("source,technical,rationality,naturalness,error\na.png,high,3,3,\n")
    with pytest.raises(ReportError, match=r"row 1 \(a.png\), column 'technical': 'high' is not a number"):
        write_html_report(words, tmp_path / "r.html")
    ok = tmp_path / "ok.csv"
    ok.write_text("source,technical,rationality,naturalness,error\na.png,3,3,3,\n")
    with pytest.raises(ReportError, match=r"--group-by 'prompt': no such column"):
        write_html_report(ok, tmp_path / "r.html", group_by="prompt")
    with pytest.raises(ReportError, match="unknown format"):
        write_html_report(tmp_path / "scores.txt", tmp_path / "r.html")
    summary = write_html_report(ok, tmp_path / "r.html")             # the image is gone: a card without it
    assert summary.missing_thumbnails == 1 and page_data(tmp_path / "r.html")["rows"][0]["thumbError"] == \
        "image file not found"


def test_bootstrap_mean_interval():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 1.0, 400)
    m = stats.bootstrap_mean(x, resamples=2000, seed=0)
    assert m.n == 400 and m.mean == pytest.approx(float(x.mean()), abs=1e-12) and m.level == 0.95
    width = m.high - m.low                                 # ~ 2 * 1.96 * sd / sqrt(n)
    assert m.low < m.mean < m.high and 0.8 * 0.196 < width < 1.2 * 0.196
    assert stats.bootstrap_mean(x, resamples=2000, seed=0) == m                   # seeded
    assert stats.bootstrap_mean(list(x) + [math.nan, math.inf, None], seed=0) == m   # non-finite dropped
    narrower = stats.bootstrap_mean(x, level=0.5, seed=0)
    assert m.low < narrower.low < narrower.high < m.high
    assert math.isnan(stats.bootstrap_mean([]).mean) and stats.bootstrap_mean([]).n == 0
    with pytest.raises(ValueError, match="confidence level"):
        stats.bootstrap_mean(x, level=95)
    with pytest.raises(ValueError, match="resamples"):
        stats.bootstrap_mean(x, resamples=0)


def test_bootstrap_draws_in_bounded_blocks(monkeypatch):
    monkeypatch.setattr(stats, "MAX_BLOCK", 1000)
    blocks = list(stats.resample_indices(300, 25, seed=0))
    assert sum(b.shape[0] for b in blocks) == 25 and all(b.shape[1] == 300 and b.size <= 1000 for b in blocks)
    assert all(0 <= int(b.min()) and int(b.max()) < 300 for b in blocks)
    big = list(stats.resample_indices(5000, 3, seed=0))                   # one row is more than a block
    assert [b.shape for b in big] == [(1, 5000)] * 3


def test_histogram_and_percentile_interval():
    counts, edges = stats.histogram([1.0, 1.2, 2.9, 5.0, 7.0, math.nan], bins=4, lo=1.0, hi=5.0)
    assert counts == [2, 1, 0, 2] and edges == [1.0, 2.0, 3.0, 4.0, 5.0]     # 7.0 counts in the last bin
    assert stats.percentile_interval(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0), abs=1e-9)
    assert all(math.isnan(v) for v in stats.percentile_interval([math.nan]))


def test_score_writes_the_report_right_after_scoring(scored, tmp_path, tiny_model_dir, capsys):
    """`joint score ... --report` gives the page `joint report` makes from the same scores (one
    writer), with or without --out; a report path that cannot be written fails before scoring."""
    folders = [str(tmp_path / "gen-a"), str(tmp_path / "gen-b")]
    reference = tmp_path / "reference.html"
    assert main(["report", str(scored), "--out", str(reference), "-q"]) == 0
    capsys.readouterr()
    out, html = tmp_path / "again.csv", tmp_path / "reports" / "r.html"
    assert main(["score", *folders, "-m", str(tiny_model_dir), "-o", str(out), "--report", str(html),
                 "--no-progress"]) == 1                                    # broken.png, as before
    assert re.search(r"wrote the report .*r\.html: 6 images", capsys.readouterr().out)
    assert page_data(html)["rows"] == page_data(reference)["rows"]       # cards, scores, groups, thumbnails
    assert "broken.png" in re.search(r'<table id="failed">(.*?)</table>', html.read_text(), re.S).group(1)
    # no --out: the report of the rows scored in this run
    bare = tmp_path / "bare.html"
    assert main(["score", *folders, "-m", str(tiny_model_dir), "--report", str(bare), "-q", "--no-progress"]) == 1
    assert page_data(bare)["rows"] == page_data(reference)["rows"]
    # --top with --out: the report shows what the file keeps
    top = tmp_path / "top.html"
    assert main(["score", *folders, "-m", str(tiny_model_dir), "-o", str(tmp_path / "top.csv"), "--top", "2",
                 "--report", str(top), "-q", "--no-progress"]) == 1
    assert len(page_data(top)["rows"]) == 2
    # a folder where the report should go: refused before anything is scored or written
    capsys.readouterr()
    assert main(["score", *folders, "-m", str(tiny_model_dir), "-o", str(tmp_path / "never.csv"),
                 "--report", str(tmp_path), "-q"]) == 2
    assert "--report" in capsys.readouterr().err and not (tmp_path / "never.csv").exists()


def test_names_that_are_not_utf8_come_back_from_the_score_table(tmp_path, photos, tiny_model_dir, capsys):
    """joint score writes such names as their bytes; joint report reads them back (issue 17, item 4)."""
    import os

    d = os.fsencode(tmp_path)
    for name in (b"bad-\xff\xfe.png", b"ok.png"):
        Image.fromarray(photos["coffee"][:64, :64]).save(os.path.join(d, name))
    os.mkdir(os.path.join(d, b"sub-\xff"))                      # and a folder, so groups hold the odd name
    Image.fromarray(photos["astronaut"][:64, :64]).save(os.path.join(d, b"sub-\xff", b"x.png"))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    os.rename(tmp_path / "broken.png", os.path.join(d, b"broken-\xff.png"))
    scores = tmp_path / "scores.csv"
    assert main(["score", str(tmp_path), "-r", "-m", str(tiny_model_dir), "-o", str(scores), "-q"]) == 1
    out = tmp_path / "r.html"
    assert main(["report", str(scores), "--out", str(out), "-q"]) == 0, capsys.readouterr().err
    rows = page_data(out)["rows"]
    assert sorted(os.fsencode(r["source"]) for r in rows) == sorted(
        os.path.join(d, n) for n in (b"bad-\xff\xfe.png", b"ok.png", os.path.join(b"sub-\xff", b"x.png")))
    assert all(r["thumb"] for r in rows)                        # the files were found by those names
    assert "broken-\\udcff.png" in out.read_text(encoding="utf-8")   # listed, escaped


def test_histogram_ticks_stay_few_on_any_range():
    """Found by the fuzz suite: a score file holding a score of 1.7e10 made the report build
    billions of axis labels (a hang)."""
    from joint_core.report import MAX_TICKS, _ticks

    assert _ticks(1.0, 5.0) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert _ticks(1.0, 3.0) == [1.0, 1.5, 2.0, 2.5, 3.0]
    for lo, hi in ((0.0, 16989336576.0), (-1e300, 1e300), (-3.0, 12.0), (1e-9, 2e-9)):
        ticks = _ticks(lo, hi)
        assert 0 < len(ticks) <= MAX_TICKS or hi - lo < 0.5, (lo, hi, ticks)
        assert all(lo <= t <= hi for t in ticks)
    assert _ticks(2.0, 2.0) == [] and _ticks(0.0, float("inf")) == []


def test_report_of_scores_beyond_float_resolution(tmp_path):
    """Found by the fuzz suite: one score of 7e13 made the group plot divide by zero."""
    from joint_core.cli import main

    p = tmp_path / "s.csv"
    p.write_text("source,technical,rationality,naturalness,error,warning\n"
                 "a.png,0.0,0.0,70368752566272.0,,\nb.png,0.0,0.0,70368752566272.0,,\n")
    assert main(["report", str(p), "--out", str(tmp_path / "r.html")]) == 0
    assert "70368752566272" in (tmp_path / "r.html").read_text()


def test_report_and_filter_of_names_too_long_for_a_file(tmp_path, capsys):
    """Found by the fuzz suite in CI: a 300-character id made os.stat raise ENAMETOOLONG."""
    from joint_core.cli import main

    p = tmp_path / "s.csv"
    long = "x" * 300
    p.write_text(f"source,technical,rationality,naturalness,error,warning\n{long},1.0,2.0,3.0,,\na.png,1,2,3,,\n")
    assert main(["report", str(p), "--out", str(tmp_path / "r.html")]) == 0
    code = main(["filter", str(p), "--min", "naturalness=0", "--to", str(tmp_path / "kept")])
    err = capsys.readouterr().err
    assert code in (0, 1, 2) and "Traceback" not in err and long[:40] in err
