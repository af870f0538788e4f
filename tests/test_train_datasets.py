"""train.datasets: readers, validation, the registry and RatedDataset helpers.

Synthetic label files and empty image files are written to tmp_path (readers never open images).
The real RAISE and CLIVE copies are used when present under $JOINT_DATA (default /work/data).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from train.datasets import (
    DATASET_KINDS,
    DatasetError,
    RatedDataset,
    Sample,
    load_dataset,
    read_agin,
    read_clive,
    read_csv,
    read_pku_i2iqa,
    read_raise,
    register_dataset,
)

DATA = Path(os.environ.get("JOINT_DATA", "/work/data"))
RAISE_ROOT = DATA / "RAISE" / "dataset"
CLIVE_ROOT = DATA / "ChallengeDB_release"


def touch(folder: Path, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        p = folder / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def agin(tmp_path):
    rng = np.random.default_rng(1)
    names = [f"{m}_{i}.png" for m in ("CoCosNet", "MAT", "DALLE2") for i in range(4)]
    touch(tmp_path / "img", names)
    mos = rng.uniform(1, 5, size=(len(names), 3))
    rows = ["filename,MOS_nat,MOS_tech,MOS_rat,category"]
    rows += [f"{n},{a!r},{b!r},{c!r},cat{i % 2}" for i, (n, (a, b, c)) in enumerate(zip(names, mos.tolist()))]
    labels = write(tmp_path / "labels.csv", "\n".join(rows) + "\n")
    return labels, tmp_path / "img", names, mos


# ------------------------------------------------------------------------------------ AGIN


def test_agin_reads_fields_and_keeps_extra_columns(agin):
    labels, img, names, mos = agin
    ds = read_agin(labels, img)
    assert ds.name == "agin" and ds.scale == (1.0, 5.0) and len(ds) == len(names)
    assert ds.names() == names
    s = ds[3]
    assert (s.mos, s.mos_t, s.mos_r) == tuple(mos[3])
    assert s.path == str((img / names[3]).resolve()) and os.path.isabs(s.path)
    assert s.extra == {"category": "cat1"} and s.group is None
    assert ds["MAT_0.png"].mos == mos[4][0]


def test_agin_group_rule(agin):
    labels, img, names, _ = agin
    ds = read_agin(labels, img, group_rule=r"^([^_]+)_")
    assert [s.group for s in ds] == [n.split("_")[0] for n in names]
    with pytest.raises(DatasetError) as exc:
        read_agin(labels, img, group_rule=r"^(MAT)_")
    msg = str(exc.value)
    assert "'CoCosNet_0.png'" in msg and "'DALLE2_3.png'" in msg and "'MAT_0.png'" not in msg
    with pytest.raises(ValueError, match="exactly one capture group"):
        read_agin(labels, img, group_rule=r"^[^_]+_")


def test_all_row_problems_reported_together(tmp_path):
    touch(tmp_path / "img", ["a.png", "b.png", "c.png", "d.png", "e.png"])
    text = ("filename,MOS_nat,MOS_tech,MOS_rat\n"
            "a.png,3,3,3\n"
            "b.png,nan,3,3\n"        # line 3: NaN
            "c.png,abc,3,3\n"        # line 4: not a number
            "d.png,3,7.5,3\n"        # line 5: out of range
            "a.png,3,3,3\n"          # line 6: duplicate
            "missing.png,3,3,3\n"    # line 7: missing file
            "e.png,3,3,\n")          # line 8: empty MOS_rat
    labels = write(tmp_path / "l.csv", text)
    with pytest.raises(DatasetError) as exc:
        read_agin(labels, tmp_path / "img")
    err = exc.value
    msg = str(err)
    assert str(labels) in msg and len(err.problems) == 6 and err.source == str(labels)
    for expected in ("line 3, 'b.png': MOS_nat is NaN",
                     "line 4, 'c.png': MOS_nat is not a number ('abc')",
                     "line 5, 'd.png': MOS_tech = 7.5 is outside the scale [1, 5]",
                     "line 6, 'a.png': duplicate name (first at line 2)",
                     "line 7, 'missing.png': image not found",
                     "line 8, 'e.png': MOS_rat is empty"):
        assert expected in msg, (expected, msg)


def test_problem_listing_is_truncated(tmp_path):
    touch(tmp_path / "img", ["x.png"])
    rows = ["filename,MOS_nat,MOS_tech,MOS_rat"] + [f"f{i}.png,9,3,3" for i in range(30)]
    labels = write(tmp_path / "l.csv", "\n".join(rows))
    with pytest.raises(DatasetError) as exc:
        read_agin(labels, tmp_path / "img")
    msg = str(exc.value)
    # 30 out-of-range + 30 missing images + "none exists" summary
    assert len(exc.value.problems) == 61
    assert msg.count("\n  ") == 21 and msg.rstrip().endswith("... and 41 more")
    assert "none of the 30 images exists" in msg


def test_missing_columns_named_with_columns_found(tmp_path):
    labels = write(tmp_path / "l.csv", "filename,MOS,MOS_tech\nx.png,3,3\n")
    with pytest.raises(DatasetError) as exc:
        read_agin(labels, tmp_path)
    msg = str(exc.value)
    assert "'MOS_nat' (for mos)" in msg and "'MOS_rat' (for mos_r)" in msg
    assert "columns found: 'filename', 'MOS', 'MOS_tech'" in msg and "MOS_tech' (for" not in msg


@pytest.mark.parametrize("content, expected", [
    (b"", "empty file"),
    (b"  \n\n", "empty file"),
    (b"filename,MOS_nat,MOS_tech,MOS_rat\n", "no data rows"),
    (b"PK\x03\x04rest-of-a-zip", "not CSV text"),
    (b"abc\x00\x01\x02", "binary file"),
    (b'filename,MOS_nat\n"a.png,3\n', None),   # unterminated quote: still parsed, then row problems
])
def test_unreadable_label_files(tmp_path, content, expected):
    labels = tmp_path / "l.csv"
    labels.write_bytes(content)
    with pytest.raises(DatasetError) as exc:
        read_agin(labels, tmp_path)
    assert str(labels) in str(exc.value)
    if expected:
        assert expected in str(exc.value)


def test_label_file_not_found_or_folder(tmp_path):
    with pytest.raises(DatasetError, match="label file not found"):
        read_agin(tmp_path / "nope.csv", tmp_path)
    with pytest.raises(DatasetError, match="is a folder"):
        read_agin(tmp_path, tmp_path)


def test_wrong_image_folder_is_named(agin, tmp_path):
    labels, _, _, _ = agin
    with pytest.raises(DatasetError, match="image folder not found: .*nowhere"):
        read_agin(labels, tmp_path / "nowhere")


# ------------------------------------------------------------------------------------ generic CSV


def test_csv_sniffs_delimiter_and_maps_columns(tmp_path):
    touch(tmp_path / "img", ["sub/a.jpg", "b.jpg", "c.jpg"])
    touch(tmp_path / "refs", ["r1.png", "r2.png"])
    labels = write(tmp_path / "l.csv", "File;Score;Tech;Scene;Prompt\n"
                                       "sub\\a.jpg;80;70;s1;r1.png\n./b.jpg;20.5;10;s1;r2.png\nc.jpg;0;100;s2;\n")
    ds = read_csv(labels, tmp_path / "img",
                  columns={"name": "File", "mos": "Score", "mos_t": "Tech", "group": "Scene", "ref": "Prompt"},
                  scale=(0, 100), ref_dir=tmp_path / "refs", name="mine")
    assert ds.name == "mine" and ds.scale == (0.0, 100.0)
    assert ds.names() == ["sub/a.jpg", "b.jpg", "c.jpg"]
    assert [s.mos for s in ds] == [80.0, 20.5, 0.0] and [s.mos_t for s in ds] == [70.0, 10.0, 100.0]
    assert [s.mos_r for s in ds] == [None] * 3 and [s.group for s in ds] == ["s1", "s1", "s2"]
    assert ds[0].ref_path == str((tmp_path / "refs" / "r1.png").resolve()) and ds[2].ref_path is None
    assert ds[0].path == str((tmp_path / "img" / "sub" / "a.jpg").resolve())


def test_csv_argument_errors(tmp_path):
    labels = write(tmp_path / "l.csv", "a,b\nx,1\n")
    with pytest.raises(ValueError, match="unknown field.*'score'"):
        read_csv(labels, tmp_path, columns={"name": "a", "score": "b"}, scale=(0, 1))
    with pytest.raises(ValueError, match="must map 'mos'"):
        read_csv(labels, tmp_path, columns={"name": "a"}, scale=(0, 1))
    with pytest.raises(ValueError, match="lo < hi"):
        read_csv(labels, tmp_path, columns={"name": "a", "mos": "b"}, scale=(5, 1))
    with pytest.raises(DatasetError, match="'c' \\(for mos_t\\)"):
        read_csv(labels, tmp_path, columns={"name": "a", "mos": "b", "mos_t": "c"}, scale=(0, 1))


def test_csv_reports_missing_reference_and_long_rows(tmp_path):
    touch(tmp_path, ["a.png", "b.png"])
    labels = write(tmp_path / "l.csv", "n,m,r\na.png,1,gone.png\nb.png,2,x.png,extra\n")
    with pytest.raises(DatasetError) as exc:
        read_csv(labels, tmp_path, columns={"name": "n", "mos": "m", "ref": "r"}, scale=(0, 5))
    msg = str(exc.value)
    assert "line 2, 'a.png': reference image not found" in msg
    assert "line 3: has 4 fields, the header has 3" in msg


# ------------------------------------------------------------------------------------ PKU-I2IQA


def test_pku_defaults_case_insensitive_and_reference_groups(tmp_path):
    gens = [f"mj_{i}.png" for i in range(4)]
    touch(tmp_path / "gen", gens)
    touch(tmp_path / "ref", ["p0.jpg", "p1.jpg"])
    labels = write(tmp_path / "pku.csv",
                   "Image,Quality,Authenticity,Correspondence,Reference\n"
                   + "".join(f"{g},{10 * i + 5},{10 * i + 6},{10 * i + 7},p{i // 2}.jpg\n" for i, g in enumerate(gens)))
    for kind in ("pku-i2iqa", "aigciqa"):
        ds = load_dataset(kind, labels=labels, image_dir=tmp_path / "gen", ref_dir=tmp_path / "ref")
        assert ds.scale == (0.0, 100.0) and ds.names() == gens
        assert [s.mos for s in ds] == [5.0, 15.0, 25.0, 35.0]
        assert [s.extra["authenticity"] for s in ds] == [6.0, 16.0, 26.0, 36.0]
        assert [s.extra["correspondence"] for s in ds] == [7.0, 17.0, 27.0, 37.0]
        assert [s.group for s in ds] == ["p0.jpg", "p0.jpg", "p1.jpg", "p1.jpg"]
        assert ds[3].ref_path == str((tmp_path / "ref" / "p1.jpg").resolve())
        assert ds[0].mos_t is None and ds[0].mos_r is None
    # one baseline per perspective: the target's MOS becomes mos, the others stay in extra
    auth = load_dataset("pku-i2iqa", labels=labels, image_dir=tmp_path / "gen", ref_dir=tmp_path / "ref",
                        target="authenticity")
    assert [s.mos for s in auth] == [6.0, 16.0, 26.0, 36.0]
    assert [(s.extra["quality"], s.extra["correspondence"]) for s in auth][1] == (15.0, 17.0)
    assert "authenticity" not in auth[0].extra
    with pytest.raises(ValueError, match="target must be one of"):
        load_dataset("pku-i2iqa", labels=labels, image_dir=tmp_path / "gen", target="beauty")


def test_pku_optional_and_explicit_columns(tmp_path):
    touch(tmp_path, ["a.png", "b.png"])
    labels = write(tmp_path / "pku.csv", "file,mos_q,auth\na.png,1.5,2\nb.png,4,101\n")
    with pytest.raises(DatasetError, match="'b.png': auth = 101 is outside the scale"):
        read_pku_i2iqa(labels, tmp_path, columns={"name": "file", "mos": "mos_q", "authenticity": "auth"})
    ds = read_pku_i2iqa(labels, tmp_path, columns={"name": "file", "mos": "mos_q", "authenticity": "auth"},
                        scale=(0, 200))
    assert [s.extra for s in ds] == [{"authenticity": 2.0}, {"authenticity": 101.0}]
    assert [s.group for s in ds] == [None, None]
    with pytest.raises(DatasetError, match="'corr' \\(for correspondence\\)"):
        read_pku_i2iqa(labels, tmp_path, columns={"name": "file", "mos": "mos_q", "correspondence": "corr"})


# ------------------------------------------------------------------------------------ RAISE


def make_raise(root: Path, rng):
    parts = {"train": ["f1.png", "r1.png", "f2.png", "f3.png"], "test": ["f1.png", "r2.png"]}
    for part, files in parts.items():
        touch(root / "images" / f"{part}_images", files)
        rows = ["filename,MOS_Rating,MOS_ZScore"]
        rows += [f"{f},{float(rng.uniform(0, 100))!r},{float(rng.normal())!r}" for f in files]
        write(root / "ratings" / f"{part}.csv", "\n".join(rows) + "\n")
    return parts


def test_raise_synthetic(tmp_path):
    parts = make_raise(tmp_path / "dataset", np.random.default_rng(0))
    ds = read_raise(tmp_path)   # the repository root is accepted too
    assert ds.official_split == {p: [f"{p}_images/{f}" for f in fs] for p, fs in parts.items()}
    assert len(ds) == 6 and len(set(ds.names())) == 6      # f1.png in both parts stays unique
    assert [s.extra["real_photo"] for s in ds] == [False, True, False, False, False, True]
    assert all(s.mos_r == s.mos and s.mos_t is None and "zscore" in s.extra for s in ds)
    assert ds.scale == (0.0, 100.0) and "non-commercial" in ds.licence
    (tmp_path / "dataset" / "images" / "test_images" / "r2.png").unlink()
    with pytest.raises(DatasetError, match="test.csv line 3, 'test_images/r2.png': image not found"):
        read_raise(tmp_path / "dataset")


@pytest.mark.skipif(not RAISE_ROOT.is_dir(), reason=f"no RAISE copy at {RAISE_ROOT}")
def test_raise_real_copy():
    ds = load_dataset("raise", root=RAISE_ROOT)
    assert len(ds) == 600 and len(set(ds.names())) == 600
    train, test = ds.official_split["train"], ds.official_split["test"]
    assert len(train) == 510 and len(test) == 90 and not set(train) & set(test)
    assert sum(s.extra["real_photo"] for s in ds) == 120
    mos = ds.arrays()["mos"]
    assert np.all((mos >= 0) & (mos <= 100)) and np.isnan(ds.arrays()["mos_t"]).all()
    # the z-scores are standardised MOS: perfectly rank-correlated with MOS_Rating
    z = np.array([s.extra["zscore"] for s in ds])
    assert np.corrcoef(np.argsort(np.argsort(z)), np.argsort(np.argsort(mos)))[0, 1] > 0.999


# ------------------------------------------------------------------------------------ CLIVE


def make_clive(root: Path, files, mos):
    sio = pytest.importorskip("scipy.io")
    cells = np.empty((len(files), 1), dtype=object)
    for i, f in enumerate(files):
        cells[i, 0] = np.array([f])
    (root / "Data").mkdir(parents=True)
    sio.savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": cells})
    sio.savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.asarray(mos, float)[None, :]})
    touch(root / "Images" / "trainingImages", [f for f in files if f.startswith("t")])
    touch(root / "Images", [f for f in files if not f.startswith("t")])
    write(root / "README.txt", "COPYRIGHT NOTICE")


def test_clive_synthetic(tmp_path):
    files = [f"t{i}.bmp" for i in range(1, 8)] + ["100.bmp", "1000.JPG", "5.bmp"]
    mos = np.linspace(3, 92, len(files))
    make_clive(tmp_path, files, mos)
    ds = read_clive(tmp_path)
    assert ds.names() == ["100.bmp", "1000.JPG", "5.bmp"]
    assert [s.mos for s in ds] == list(mos[7:]) and [s.mos_t for s in ds] == list(mos[7:])
    assert [s.extra["index"] for s in ds] == [7, 8, 9] and ds[0].mos_r is None
    assert ds.licence == str((tmp_path / "README.txt").resolve())
    full = read_clive(tmp_path, include_training_images=True)
    assert full.names()[:2] == ["trainingImages/t1.bmp", "trainingImages/t2.bmp"] and len(full) == 10
    (tmp_path / "Images" / "5.bmp").unlink()
    with pytest.raises(DatasetError, match="entry 10, '5.bmp': image not found"):
        read_clive(tmp_path)


def test_clive_mismatched_mat_files(tmp_path):
    make_clive(tmp_path, ["a.bmp", "b.bmp"], [1.0, 2.0, 3.0])
    with pytest.raises(DatasetError, match="lists 2 images but .* has 3 MOS values"):
        read_clive(tmp_path)


@pytest.mark.skipif(not CLIVE_ROOT.is_dir(), reason=f"no CLIVE copy at {CLIVE_ROOT}")
def test_clive_real_copy():
    ds = load_dataset("clive", root=CLIVE_ROOT)
    assert len(ds) == 1162 and len(set(ds.names())) == 1162
    assert not any(n.startswith("trainingImages/") for n in ds.names())
    assert {Path(n).suffix for n in ds.names()} == {".bmp", ".JPG"}
    mos = ds.arrays()["mos"]
    assert 0 < mos.min() < 10 and 90 < mos.max() < 100
    full = read_clive(CLIVE_ROOT, include_training_images=True)
    assert len(full) == 1169 and full.names()[0] == "trainingImages/t1.bmp"


# ------------------------------------------------------------------------------------ registry


def test_registry(agin):
    labels, img, _, _ = agin
    assert {"agin", "csv", "raise", "clive", "pku-i2iqa", "aigciqa"} <= set(DATASET_KINDS)
    assert load_dataset("AGIN", labels=labels, image_dir=img).names() == read_agin(labels, img).names()
    with pytest.raises(DatasetError) as exc:
        load_dataset("koniq", root="x")
    assert "'koniq'" in str(exc.value) and all(k in str(exc.value) for k in DATASET_KINDS)
    with pytest.raises(TypeError, match="lables.*read_agin"):
        load_dataset("agin", lables=labels, image_dir=img)

    @register_dataset("unit-test-kind")
    def reader(n: int = 2) -> RatedDataset:
        return RatedDataset("u", [Sample(f"{i}", f"/{i}", 1.0) for i in range(n)], (0, 1))

    assert "unit-test-kind" in DATASET_KINDS and len(load_dataset("unit-test-kind", n=3)) == 3
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("unit-test-kind")(lambda: None)


# ------------------------------------------------------------------------------------ RatedDataset


def small_dataset(rng) -> RatedDataset:
    samples = [Sample(f"{i}.png", f"/x/{i}.png", float(rng.uniform(0, 100)),
                      mos_t=float(rng.uniform(0, 100)) if i % 2 else None,
                      mos_r=float(rng.uniform(0, 100)), extra={"k": i}) for i in range(8)]
    return RatedDataset("t", samples, (0.0, 100.0), official_split={"train": ["0.png", "1.png"], "test": ["7.png"]})


def test_subset_keeps_order_and_names_unknowns():
    ds = small_dataset(np.random.default_rng(2))
    sub = ds.subset(["5.png", "1.png", "7.png"])
    assert sub.names() == ["5.png", "1.png", "7.png"] and sub[0] is ds[5]
    assert sub.official_split == {"train": ["1.png"], "test": ["7.png"]}
    assert len(ds) == 8 and ds.official_split["train"] == ["0.png", "1.png"]
    with pytest.raises(KeyError) as exc:
        ds.subset(["1.png", "nope.png", "gone.png"])
    assert "'nope.png'" in str(exc.value) and "'gone.png'" in str(exc.value) and "'1.png'" not in str(exc.value)


def test_rescaled_and_arrays():
    ds = small_dataset(np.random.default_rng(3))
    a = ds.arrays()
    assert set(a) == {"mos", "mos_t", "mos_r"} and all(v.dtype == np.float64 and v.shape == (8,) for v in a.values())
    assert np.isnan(a["mos_t"][::2]).all() and np.isfinite(a["mos_t"][1::2]).all()
    r = ds.rescaled((1, 5))
    assert r.scale == (1.0, 5.0) and ds.scale == (0.0, 100.0)
    b = r.arrays()
    for key in a:
        np.testing.assert_allclose(b[key], 1 + a[key] * 4 / 100, equal_nan=True)
    assert r[0].extra == ds[0].extra and r[0].extra is not ds[0].extra
    # a round trip restores the values and endpoints map onto endpoints
    np.testing.assert_allclose(r.rescaled((0, 100)).arrays()["mos"], a["mos"])
    edge = RatedDataset("e", [Sample("a", "/a", 0.0), Sample("b", "/b", 100.0)], (0, 100)).rescaled((1, 5))
    assert [s.mos for s in edge] == [1.0, 5.0]
    with pytest.raises(ValueError, match="target"):
        ds.rescaled((5, 5))


def test_agin_group_column_and_csv_group_rule_give_content_groups(tmp_path):
    from train.datasets import load_dataset

    img = tmp_path / "img"
    img.mkdir()
    rows = ["filename,MOS_nat,MOS_tech,MOS_rat,scene"]
    for gen in ("CoCosNet", "SPADE"):
        for i in range(3):
            Image.new("RGB", (8, 8)).save(img / f"{gen}_{i}.png")
            rows.append(f"{gen}_{i}.png,3,3,3,s{i}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset("agin", labels=tmp_path / "labels.csv", image_dir=img, group_column="scene")
    assert ds["SPADE_2.png"].group == "s2" and ds["CoCosNet_2.png"].group == "s2"
    by_index = load_dataset("csv", labels=tmp_path / "labels.csv", image_dir=img,
                            columns={"name": "filename", "mos": "MOS_nat"}, scale=(1, 5), group_rule=r"_(\d+)\.")
    assert [s.group for s in by_index] == ["0", "1", "2", "0", "1", "2"]


def test_a_reader_argument_typo_is_a_dataset_error(tmp_path):
    from train.datasets import DatasetError, load_dataset

    with pytest.raises(DatasetError, match="'grup_rule'.*read_agin"):
        load_dataset("agin", labels=tmp_path / "x.csv", image_dir=tmp_path, grup_rule="x")


def test_split_warns_when_no_content_groups_are_known():
    from train.data import make_split
    from train.datasets import RatedDataset, Sample
    from train.recipe import DataSpec

    samples = [Sample(name=f"img_{i}.png", path=f"/x/img_{i}.png", mos=float(i)) for i in range(20)]
    spec = DataSpec(name="set", kind="csv", args={}, split={"kind": "random", "n_splits": 1})
    with pytest.warns(UserWarning, match="no content groups"):
        make_split(spec, RatedDataset(name="set", samples=samples, scale=(0, 20)), 0, 0)
    grouped = DataSpec(name="set", kind="csv", args={}, split={"kind": "random", "n_splits": 1,
                                                                "group_rule": r"img_(\d)"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_split(grouped, RatedDataset(name="set", samples=samples, scale=(0, 20)), 0, 0)
        make_split(spec, RatedDataset(name="set", samples=samples, scale=(0, 20), distinct_content=True), 0, 0)


# ------------------------------------------------------------------------------------ AGIQA-3K


AGIQA_ROOT = DATA / "AGIQA3K" / "data"


def make_agiqa(root: Path, rows):
    header = "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align,mos"
    lines = [header] + [f"{n},{p},,,,{q},0.5,{a},0.4,{q}" for n, p, q, a in rows]
    write(root / "data" / "data.csv", "\n".join(lines) + "\n")
    touch(root / "data" / "ACGIQA-3K", [r[0] for r in rows])


def test_agiqa3k_synthetic_groups_by_prompt_and_picks_the_target(tmp_path):
    from train.datasets import read_agiqa3k
    from train.splits import holdout_split

    rows = [(f"{g}_normal_{i:03d}.jpg", f"prompt {i}", 0.5 + (i + k) % 4, 1 + k % 3)
            for i in range(10) for k, g in enumerate(("AttnGAN", "sd1.5", "xl2.2"))]
    make_agiqa(tmp_path, rows)
    ds = read_agiqa3k(tmp_path)                         # the repository root is accepted
    assert len(ds) == 30 and ds.scale == (0.0, 5.0) and "MIT" in ds.licence
    s = ds["AttnGAN_normal_003.jpg"]
    assert s.group == "prompt 3" and s.extra["generator"] == "AttnGAN_normal"
    assert s.mos == s.mos_t == 3.5 and s.mos_r is None and s.extra["alignment"] == 1
    al = read_agiqa3k(tmp_path / "data", target="alignment", labels=["mos_r"])
    assert al["AttnGAN_normal_003.jpg"].mos_r == 1 and al["AttnGAN_normal_003.jpg"].mos_t is None
    split = holdout_split(ds, 0.2, 0.1, seed=0)         # prompt-disjoint
    prompts = {p: {ds[n].group for n in getattr(split, p)} for p in ("train", "val", "test")}
    assert not (prompts["train"] & prompts["test"]) and not (prompts["val"] & prompts["test"])
    with pytest.raises(ValueError, match="target must be one of"):
        read_agiqa3k(tmp_path, target="beauty")
    write(tmp_path / "data" / "data.csv", "name,prompt,mos_quality,mos_align\nx.jpg,a cat,7,1\n")
    with pytest.raises(DatasetError, match="mos_quality = 7 is outside the scale"):
        read_agiqa3k(tmp_path)


@pytest.mark.skipif(not AGIQA_ROOT.is_dir(), reason=f"no AGIQA-3K copy at {AGIQA_ROOT}")
def test_agiqa3k_real_copy():
    ds = load_dataset("agiqa3k", root=AGIQA_ROOT)
    assert len(ds) == 2982 and len({s.group for s in ds}) == 300
    assert len({s.extra["generator"] for s in ds}) == 10


# ------------------------------------------------------------------------------------ anatomy


def test_anatomy_counts_errors_per_annotator_and_finds_misnamed_files(tmp_path):
    from train.datasets import read_anatomy

    cols = [f"{c}. {k} Error-{c}.{p} {part}" for c, k in ((1, "Missing"), (2, "Extra"))
            for p, part in ((1, "Torso"), (2, "Limbs"))]
    header = "Image Id,Model,Prompt,Pic Num.," + ",".join(cols) + ",Annotator"
    rows = [
        'sdxl_couple hugging_01,sdxl,couple hugging,1,1/2a,,"1/2a,1/2c",,anno1',
        'sdxl_couple hugging_01,sdxl,couple hugging,1,,,,,anno2',
        'sdxl_couple hugging_02,sdxl,couple hugging,2,1/1a,2/2b,1/1c,1/1a,anno1',
    ]
    write(tmp_path / "data" / "annotations.csv", "\n".join([header] + rows) + "\n")
    touch(tmp_path / "images" / "sdXL" / "couple_hugging", ["sdXL_hug_01.jpg", "sdXL_hug_012.jpg"])
    ds = read_anatomy(tmp_path)
    assert [s.extra["errors"] for s in ds] == [1.5, 4.0]           # (3 + 0) / 2 annotators, 4
    assert ds[1].name == "images/sdXL/couple_hugging/sdXL_hug_012.jpg"   # picture 2, misnamed
    assert all(s.mos is None and s.group == "couple hugging" for s in ds)


# ------------------------------------------------------------------------------------ degenerate


def test_degenerate_frames_are_written_once_and_rated_at_the_bottom(tmp_path):
    from train.data import make_split
    from train.datasets import make_degenerate
    from train.recipe import DataSpec

    ds = make_degenerate(tmp_path / "deg", per_kind=2, seed=3, kinds=["black", "flat", "noise"],
                         sizes=[(40, 48)])
    assert len(ds) == 6 and ds.distinct_content
    assert all(s.mos == s.mos_t == s.mos_r == 0.0 for s in ds)
    assert ds.rescaled((1, 5))[0].mos == 1.0
    black = np.asarray(Image.open(ds["black_000.png"].path))
    noise = np.asarray(Image.open(ds["noise_001.png"].path))
    assert black.shape == (40, 48, 3) and black.max() <= 8 and noise.std() > 30
    stamp = os.path.getmtime(ds[0].path)
    again = make_degenerate(tmp_path / "deg", per_kind=2, seed=3, kinds=["black", "flat", "noise"],
                            sizes=[(40, 48)])
    assert again.names() == ds.names() and os.path.getmtime(ds[0].path) == stamp   # reused, not rewritten
    other = make_degenerate(tmp_path / "deg", per_kind=2, seed=4, kinds=["black", "flat", "noise"],
                            sizes=[(40, 48)])
    assert not np.array_equal(np.asarray(Image.open(other["noise_001.png"].path)), noise)
    only_t = make_degenerate(tmp_path / "deg2", per_kind=1, kinds=["black"], sizes=[(8, 8)], labels=["mos_t"])
    assert only_t[0].mos is None and only_t[0].mos_t == 0.0
    split = make_split(DataSpec(name="deg", kind="degenerate", split={"kind": "train"}), ds, 0, seed=0)
    assert split.train == ds.names() and split.val == [] and split.test == []
    with pytest.raises(ValueError, match="unknown"):
        make_degenerate(tmp_path / "x", kinds=["sparkles"])
