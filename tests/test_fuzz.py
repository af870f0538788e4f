"""Property-based fuzzing of every parser of outside data (issue 23): image bytes, in-memory
arrays and tensors, score files, job records, ``--files-from`` lists, WebDataset tars, CSV and
Parquet tables, model folders and the ComfyUI nodes' inputs.

The properties, for every example: a result or a *named* error (one of joint's error classes,
whose message names the file or argument) - never another exception, never a hang (a time limit
per example), bounded memory; and for resuming a score file: no row that was in it is lost.

Runs in CI with the derandomized ``ci`` profile (see tests/fuzzkit.py); ``JOINT_FUZZ_PROFILE=long
python -m pytest -m fuzz`` runs many more random examples. The tests set up their files in the
test function and run hypothesis inside it (examples share the tiny model and the folder).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz suite needs hypothesis (dev extra)")
from hypothesis import assume, given, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402
from PIL import Image  # noqa: E402

from fuzzkit import bounded, named_error  # noqa: E402
from joint_core.cli import main  # noqa: E402
from joint_core.errors import (CheckpointError, ConfigError, InputError, JointError,  # noqa: E402
                               OutputError)
from joint_core.preprocess.images import ImageLimits, collect_images, load_one  # noqa: E402
from joint_core.stream.sinks import FIELDS, Sink, read_rows, write_rows  # noqa: E402
from joint_core.stream.sources import FileList, Table, TarShard  # noqa: E402

pytestmark = pytest.mark.fuzz

# every error joint raises on purpose names its input: the one family (joint_core.errors)
NAMED = (JointError,)


# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------

HOSTILE = ["", ".", "..", "../../etc/passwd", "/tmp/x/private_photo", "=cmd|' /C calc'!A0", "+1", "-2", "@SUM(1)",
           "<!--<script>", "</script>", "a\nb", "a\rb", "a,b", 'a"b', "'quoted", "\t=x", "x" * 300, "\udcff",
           "\u202etxt.png", "ﬁ", "日本語", "a\x00b", " lead", "trail ", "a/b/c", "-", "--", "--out"]

names = st.one_of(st.sampled_from(HOSTILE), st.text(min_size=0, max_size=40))


@st.composite
def encoded_images(draw):
    """A small image encoded by PIL in a common format, then (most of the time) damaged."""
    fmt = draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "ICO"]))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1", "I;16", "I", "F", "LA", "CMYK"]))
    w, h = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    try:
        img = img.convert(mode)
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        data = bytearray(buf.getvalue())
    except (OSError, ValueError, KeyError):  # a mode the format cannot store
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="PNG")
        data = bytearray(buf.getvalue())
    how = draw(st.sampled_from(["none", "truncate", "flip", "huge_size", "garbage", "prefix", "splice"]))
    if how == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
    elif how == "huge_size":   # the declared width and height of the usual headers
        big = draw(st.sampled_from([0, 1, 65535, 2**31 - 1, 2**32 - 1, 100_000]))
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            data[16:24] = big.to_bytes(4, "big") + draw(st.sampled_from([1, big])).to_bytes(4, "big")
        elif data[:2] == b"BM":
            data[18:26] = (big & 0x7FFFFFFF).to_bytes(4, "little") * 2
        elif data[:3] == b"GIF":
            data[6:10] = (big & 0xFFFF).to_bytes(2, "little") * 2
        else:
            data[4:8] = (big & 0xFFFFFFFF).to_bytes(4, "big")
    elif how == "garbage":
        data = bytearray(draw(st.binary(max_size=256)))
    elif how == "prefix":
        data = bytearray(draw(st.binary(min_size=1, max_size=16))) + data
    elif how == "splice":
        i = draw(st.integers(0, len(data)))
        data = data[:i] + bytearray(draw(st.binary(max_size=64))) + data[i:]
    return bytes(data)


@st.composite
def arrays_and_tensors(draw):
    """numpy arrays and torch tensors of every dtype, 0-5 dims, odd strides, NaN and inf."""
    dtype = draw(st.sampled_from(["uint8", "uint16", "int8", "int16", "int32", "int64", "float16", "float32",
                                  "float64", "bool", "complex64"]))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=7))
    assume(int(np.prod(shape)) <= 4096)
    if dtype.startswith("float"):
        elems = st.floats(allow_nan=True, allow_infinity=True, width=16 if dtype == "float16" else 32)
        arr = draw(hnp.arrays(dtype, shape, elements=elems))
    elif dtype == "complex64":
        arr = draw(hnp.arrays(dtype, shape, elements=st.complex_numbers(max_magnitude=2, width=64)))
    else:
        arr = draw(hnp.arrays(dtype, shape))
    view = draw(st.sampled_from(["as is", "transposed", "strided", "fortran", "reversed"]))
    if view == "transposed" and arr.ndim >= 2:
        arr = arr.swapaxes(0, -1)
    elif view == "strided" and arr.ndim >= 1:
        arr = arr[::2]
    elif view == "fortran":
        arr = np.asfortranarray(arr)
    elif view == "reversed" and arr.ndim >= 1:
        arr = arr[::-1]
    kind = draw(st.sampled_from(["numpy", "torch", "torch channels_last", "torch bf16", "list"]))
    if kind == "numpy":
        return arr
    if kind == "list":
        return [arr, np.zeros((8, 8, 3), np.uint8)]
    t = torch.from_numpy((arr if arr.dtype != np.uint16 else arr.astype(np.int32)).copy(order="C"))
    if kind == "torch bf16" and t.is_floating_point():
        t = t.to(torch.bfloat16)
    if kind == "torch channels_last" and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


scores = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=False, width=32))
records = st.builds(lambda s, t, r, n, e, w: {"source": s, "technical": t, "rationality": r, "naturalness": n,
                                             "error": e, "warning": w},
                    names, scores, scores, scores, st.one_of(st.none(), names), st.one_of(st.none(), names))

TAILS = [b"", b"note: \"checked\n", b'"', b'x,"1', b"\x00\x00\x00", b"garbage without newline",
         b"\xff\xfe\n", b"a,b\n", b'"unclosed\nsecond line\n', b"{\"source\": \"x\"", b"[1,2]\n"]


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------


def _check_item(item, name, parser=None):
    assert isinstance(item.source, str)
    if parser and not item.ok:
        named_error(parser)
    if item.ok:
        t = item.tensor
        assert t.dim() == 3 and t.shape[0] == 3 and t.shape[1] >= 1 and t.shape[2] >= 1, t.shape
        assert t.dtype in (torch.uint8, torch.float32), t.dtype
        if t.is_floating_point():
            assert torch.isfinite(t).all() and t.min() >= 0 and t.max() <= 1
    else:
        assert isinstance(item.error, str) and item.error
        if name:
            assert name in item.error, (name, item.error)


def test_fuzz_image_bytes():
    limits = ImageLimits(max_side=64, max_pixels=4096 * 4096)

    @given(data=encoded_images())
    def check(data):
        with bounded("image bytes"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                item = load_one(data, source="fuzz.img", limits=limits)
        _check_item(item, "fuzz.img", "image bytes")
        if item.ok:   # the bound on declared sizes held
            assert item.tensor.shape[1] * item.tensor.shape[2] <= limits.max_pixels

    check()


def test_fuzz_image_files_by_name(tmp_path):
    """The same bytes under hostile file names and extensions, read from disk."""
    d = tmp_path / "imgs"
    d.mkdir()

    @given(data=encoded_images(), stem=st.text(st.characters(blacklist_characters="/\x00", codec="utf-8"),
                                                min_size=1, max_size=30),
           ext=st.sampled_from([".png", ".jpg", ".gif", ".webp", ".tif", ".bmp", ".txt", ""]))
    def check(data, stem, ext):
        name = (stem + ext)[:200]
        assume(name not in (".", ".."))
        p = d / name
        try:
            p.write_bytes(data)
        except OSError:
            assume(False)
        try:
            with bounded("image files"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    item = load_one(str(p), limits=ImageLimits(max_side=64))
            _check_item(item, None, "image files")
            if not item.ok:
                assert str(p) in item.error or name in item.error, item.error
        finally:
            p.unlink()

    check()


def test_fuzz_arrays_and_tensors(tiny_scorer):
    @given(obj=arrays_and_tensors(), layout=st.sampled_from(["auto", "channels_first", "channels_last"]))
    def check(obj, layout):
        with bounded("arrays and tensors"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                items = collect_images(obj, limits=ImageLimits(max_side=32), layout=layout)
                for item in items:
                    _check_item(item, None)
                if sum(i.ok for i in items) <= 4:   # and the scorer keeps every good one
                    res = tiny_scorer.score(obj, batch_size=3, layout=layout)
        if sum(i.ok for i in items) <= 4:
            assert len(res) == len(items)
            for i, item in enumerate(items):
                if item.ok:
                    assert i not in res.errors and math.isfinite(float(res.naturalness[i]))
                else:
                    assert i in res.errors and math.isnan(float(res.naturalness[i]))

    check()


# --------------------------------------------------------------------------------------------
# score files
# --------------------------------------------------------------------------------------------


def _whole_lines(data: bytes, fmt: str) -> list:
    """The lines of a CSV/JSONL score file that are rows on their own, as a user sees them:
    these must all survive a resume."""
    out = []
    for line in data.split(b"\n")[:-1]:
        if fmt == ".csv":
            try:
                row = next(csv.reader([line.decode("utf-8")]))
            except (UnicodeDecodeError, csv.Error, StopIteration):
                continue
            if len(row) == len(FIELDS) and row[0] != "source":
                out.append(line)
        else:
            try:
                if isinstance(json.loads(line), dict):
                    out.append(line)
            except ValueError:
                continue
    return out


def test_fuzz_resume_never_loses_a_row(tmp_path):
    """Resuming a score file (rows joint wrote, then a hand edit or a torn write) keeps every
    row that was in it, or refuses with a named error and changes nothing."""
    n = [0]

    @given(rows=st.lists(records, max_size=6), fmt=st.sampled_from([".csv", ".jsonl"]),
           tail=st.one_of(st.sampled_from(TAILS), st.binary(max_size=80)),
           cut=st.integers(0, 400), middle=st.one_of(st.none(), st.sampled_from(TAILS)))
    def check(rows, fmt, tail, cut, middle):
        n[0] += 1
        path = tmp_path / f"r{n[0]}{fmt}"
        write_rows(str(path), iter(rows))
        data = path.read_bytes()
        if middle is not None:   # a hand edit between rows
            lines = data.split(b"\n")
            at = min(len(lines) - 1, 1 + cut % max(1, len(lines) - 1))
            data = b"\n".join(lines[:at] + [middle.rstrip(b"\n")] + lines[at:])
        data = data + tail
        if cut % 3 == 0 and len(data) > 2:   # or a write torn anywhere
            data = data[:len(data) - cut % len(data)]
        path.write_bytes(data)
        before = _whole_lines(data, fmt)
        with bounded("score file resume"):
            try:
                sink = Sink(str(path), mode="resume")
            except OutputError as e:
                named_error("score file resume")
                assert str(path) in str(e)
                assert path.read_bytes() == data, "a refused resume changed the file"
                return
            sink.write([{"source": "new", "technical": 1.0, "rationality": 2.0, "naturalness": 3.0,
                         "error": None, "warning": None}])
            sink.close()
        after = path.read_bytes()
        kept = set(after.split(b"\n"))
        lost = [line for line in before if line not in kept]
        assert not lost, f"resume dropped rows: {lost[:3]}"
        if len(after) < len(data) + 1:
            assert sink.notes, "bytes were removed without a note"

    check()


def test_fuzz_read_score_files(tmp_path):
    """Reading any file as a score file (merge, filter, report, --resume read them): rows or an
    OutputError naming the file."""
    n = [0]

    @given(fmt=st.sampled_from([".csv", ".jsonl", ".json", ".parquet"]), rows=st.lists(records, max_size=5),
           damage=st.sampled_from(["none", "append", "replace", "truncate", "json_types"]),
           junk=st.binary(max_size=120), cut=st.integers(0, 10_000))
    def check(fmt, rows, damage, junk, cut):
        n[0] += 1
        path = tmp_path / f"s{n[0]}{fmt}"
        write_rows(str(path), iter(rows))
        target = path if path.is_file() else sorted(path.glob("part-*.parquet"))[0] if list(
            path.glob("part-*.parquet")) else None
        if target is not None and damage != "none":
            data = target.read_bytes()
            if damage == "append":
                data += junk
            elif damage == "replace":
                data = junk
            elif damage == "truncate":
                data = data[:cut % (len(data) + 1)]
            else:
                data = json.dumps([{"source": 1, "technical": "x", "naturalness": [1], "error": {}}]
                                  ).encode() if fmt == ".json" else data + b'{"source": 5, "technical": "a"}\n'
            target.write_bytes(data)
        with bounded(f"score file read {fmt}"):
            try:
                got = list(read_rows(str(path)))
            except OutputError as e:
                named_error(f"score file read {fmt}")
                assert str(path) in str(e), e
                return
        for r in got:
            assert isinstance(r, dict) and set(FIELDS) <= set(r), r
        if damage == "none":
            assert len(got) == len(rows)
            assert [r["source"] for r in got] == [r["source"] for r in rows]

    check()


def test_fuzz_merge_filter_report_on_damaged_score_files(tmp_path, capsys):
    """The commands that read score files give exit code 2 and a message, never a traceback."""
    n = [0]

    @given(fmt=st.sampled_from([".csv", ".jsonl", ".json"]), rows=st.lists(records, min_size=1, max_size=4),
           junk=st.one_of(st.sampled_from(TAILS), st.binary(max_size=60)),
           cmd=st.sampled_from(["merge", "filter", "report"]))
    def check(fmt, rows, junk, cmd):
        n[0] += 1
        d = tmp_path / f"m{n[0]}"
        d.mkdir()
        path = d / f"s{fmt}"
        write_rows(str(path), iter(rows))
        path.write_bytes(path.read_bytes() + junk)
        before = path.read_bytes()
        argv = {"merge": ["merge", str(path), "--out", str(d / f"merged{fmt}")],
                "filter": ["filter", str(path), "--min", "naturalness=0", "--mode", "list", "--to", str(d / "l.txt")],
                "report": ["report", str(path), "--out", str(d / "r.html")]}[cmd]
        with bounded(f"{cmd} of a damaged file"):
            try:
                code = main(argv + ["-q"] if cmd != "report" else argv)
            except SystemExit as e:  # argparse
                code = e.code
        err = capsys.readouterr().err
        assert code in (0, 1, 2), (code, err)
        assert "Traceback" not in err
        assert path.read_bytes() == before, f"{cmd} changed the file it read"

    check()


# --------------------------------------------------------------------------------------------
# job records
# --------------------------------------------------------------------------------------------

json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)


def _valid_meta(out: str) -> dict:
    return {"version": 2, "out": out, "model": {"name": "tiny", "config_hash": "abc", "ranking": "naturalness",
                                                 "score_range": [1, 5]},
            "shard": [0, 1], "inputs": {"count": 2, "ids": {"paths": 2, "keys": 0}, "hash": "00"},
            "batch_size": 4, "created": "2026-12-04T00:00:00"}


@st.composite
def job_records(draw, out):
    kind = draw(st.sampled_from(["mutated", "json", "bytes", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        depth = draw(st.integers(1, 100_000))
        return b"[" * depth + b"]" * draw(st.sampled_from([0, depth]))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    meta = _valid_meta(out)
    for _ in range(draw(st.integers(1, 3))):
        node = meta
        path = draw(st.sampled_from([("model",), ("model", "ranking"), ("model", "score_range"), ("shard",),
                                     ("inputs",), ("inputs", "ids"), ("inputs", "ids", "keys"), ("inputs", "count"),
                                     ("batch_size",), ("version",), ("out",)]))
        for k in path[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict):
            if draw(st.booleans()):
                node.pop(path[-1], None)
            else:
                node[path[-1]] = draw(json_values)
    return json.dumps(meta).encode()


def test_fuzz_job_records(tmp_path, tiny_model_dir, capsys):
    """A damaged or edited OUT.joint.json: read_meta gives a record or one OutputError naming the
    file; filter, report and score --resume then exit with a message (never a traceback), and the
    score file keeps every row."""
    from joint_core.stream.job import id_kinds, read_meta

    img = tmp_path / "a.png"
    Image.fromarray(np.full((24, 24, 3), 90, np.uint8)).save(img)
    n = [0]

    @given(data=st.data(), cmd=st.sampled_from(["read", "filter", "report", "resume"]))
    def check(data, cmd):
        n[0] += 1
        d = tmp_path / f"j{n[0]}"
        d.mkdir()
        out = d / "s.csv"
        write_rows(str(out), iter([{"source": str(img), "technical": 1.0, "rationality": 2.0, "naturalness": 3.0,
                                    "error": None, "warning": None}]))
        record = data.draw(job_records(str(out)))
        Path(str(out) + ".joint.json").write_bytes(record)
        before = out.read_bytes()
        with bounded(f"job record ({cmd})"):
            if cmd == "read":
                try:
                    meta = read_meta(str(out))
                except OutputError as e:
                    named_error(f"job record ({cmd})")
                    assert "s.csv.joint.json" in str(e)
                    return
                assert isinstance(meta, dict)
                assert id_kinds(meta) in ("paths", "keys", "mixed", "unknown")
                return
            argv = {"filter": ["filter", str(out), "--min", "naturalness=0", "--mode", "list", "--to",
                               str(d / "l.txt"), "-q"],
                    "report": ["report", str(out), "--out", str(d / "r.html")],
                    "resume": ["score", str(img), "--out", str(out), "--resume", "-m", str(tiny_model_dir), "-q",
                               "--no-progress", "--threads", "1"]}[cmd]
            code = main(argv)
        err = capsys.readouterr().err
        assert code in (0, 1, 2), (code, err)
        assert "Traceback" not in err
        assert out.read_bytes().startswith(before.rstrip(b"\n")), "a row was lost"

    check()


# --------------------------------------------------------------------------------------------
# --files-from lists
# --------------------------------------------------------------------------------------------


@st.composite
def list_files(draw):
    parts = draw(st.lists(st.one_of(
        st.binary(max_size=40), st.sampled_from([b"\n", b"\r\n", b"\x00", b"", b"# comment\n", b"  \n"]),
        st.builds(lambda n, c: c * n, st.integers(1, 200_000), st.sampled_from([b"a", b"/", b"\x00", b"\xff"])),
        st.sampled_from([s.encode("utf-8", "surrogateescape") + b"\n" for s in HOSTILE])), max_size=12))
    return b"".join(parts)


def test_fuzz_files_from_lists(tmp_path):
    n = [0]

    @given(data=list_files(), null=st.booleans())
    def check(data, null):
        n[0] += 1
        p = tmp_path / f"list{n[0]}.txt"
        p.write_bytes(data)
        with bounded("--files-from list"):
            try:
                got = list(FileList(str(p), null=null).samples())
            except InputError as e:
                named_error("--files-from list")
                assert str(p) in str(e)
                return
        for s in got:
            assert isinstance(s.key, str) and len(s.key) <= 70_000
            assert (s.path is None) != (s.error is None)

    check()


# --------------------------------------------------------------------------------------------
# WebDataset tars
# --------------------------------------------------------------------------------------------

MEMBER_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE,
                "blk": tarfile.BLKTYPE, "contiguous": tarfile.CONTTYPE, "gnu sparse": tarfile.GNUTYPE_SPARSE}


@st.composite
def tars(draw):
    members = draw(st.lists(st.tuples(
        st.sampled_from(list(MEMBER_TYPES)),
        st.one_of(names, st.builds(lambda s, e: s + e, names, st.sampled_from([".png", ".jpg", ".cls", ".PNG",
                                                                                  ".png.json", ""]))),
        st.one_of(encoded_images(), st.binary(max_size=40))), max_size=6))
    fmt = draw(st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for kind, name, data in members:
            info = tarfile.TarInfo(name.replace("\x00", "") or "x")
            info.type = MEMBER_TYPES[kind]
            if kind in ("file", "contiguous"):
                info.size = len(data)
            if kind in ("symlink", "hardlink"):
                info.linkname = draw(names).replace("\x00", "")
            try:
                tf.addfile(info, io.BytesIO(data) if info.size else None)
            except (ValueError, UnicodeError, tarfile.TarError):
                continue
    raw = bytearray(buf.getvalue())
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif damage == "flip" and raw:
        for _ in range(draw(st.integers(1, 6))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return bytes(raw), draw(st.sampled_from([".tar", ".tar.gz"]))


def test_fuzz_webdataset_tars(tmp_path):
    import gzip

    from joint_core.stream.loader import load_sample

    n = [0]

    @given(tar=tars())
    def check(tar):
        raw, suffix = tar
        n[0] += 1
        p = tmp_path / f"shard{n[0]}{suffix}"
        p.write_bytes(gzip.compress(raw) if suffix == ".tar.gz" else raw)
        with bounded("WebDataset tar"):
            shard = TarShard(str(p))
            got = list(shard.samples())
            skipped = shard.skipped
            for s in got:
                assert isinstance(s.key, str)
                if s.error is not None:
                    assert str(p) in s.error
                else:
                    for item in load_sample(s, ImageLimits(max_side=32)):
                        _check_item(item, None)
        assert all(str(p) in k for k in skipped)

    check()


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


def test_fuzz_tables(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    n = [0]
    cells = st.one_of(st.none(), names, st.binary(max_size=30), encoded_images(), st.integers(),
                      st.fixed_dictionaries({"bytes": st.one_of(st.none(), st.binary(max_size=20)),
                                             "path": st.one_of(st.none(), names)}))

    @given(kind=st.sampled_from([".csv", ".tsv", ".parquet", "damaged .parquet"]),
           values=st.lists(cells, max_size=6), column=st.sampled_from(["image", "path", "missing"]),
           raw=st.binary(max_size=300), big=st.booleans())
    def check(kind, values, column, raw, big):
        n[0] += 1
        suffix = kind.split()[-1]
        p = tmp_path / f"t{n[0]}{suffix}"
        if suffix in (".csv", ".tsv"):
            text = "image,id\n" if suffix == ".csv" else "image\tid\n"
            body = "".join(f"{v!s}{',' if suffix == '.csv' else chr(9)}{i}\n" for i, v in enumerate(values))
            data = (text + body).encode("utf-8", "surrogateescape") + raw
            if big:   # one huge cell (beyond the csv module's default field limit)
                data += b'"' + b"x" * 200_000 + b'",1\n'
            p.write_bytes(data)
        else:
            col = [v if isinstance(v, str) and v.encode("utf-8", "replace").decode() == v else None
                   for v in values]   # (pyarrow cannot store lone surrogates)
            if any(isinstance(v, (bytes, bytearray)) for v in values):
                col = [bytes(v) if isinstance(v, (bytes, bytearray)) else None for v in values]
            elif any(isinstance(v, dict) for v in values):
                col = [{"bytes": v["bytes"], "path": v["path"] if v["path"] in col else None}
                       if isinstance(v, dict) else None for v in values]
            table = pa.table({"image": col, "id": [str(i) for i in range(len(values))]})
            pq.write_table(table, p)
            if kind.startswith("damaged"):
                data = bytearray(p.read_bytes())
                for i in range(min(len(raw), 8)):
                    data[(raw[i] * 7919 + i) % len(data)] = raw[i]
                p.write_bytes(bytes(data))
        with bounded(f"table {kind}"):
            try:
                got = list(Table(str(p), column, "id").samples())
            except InputError as e:
                named_error(f"table {kind}")
                assert str(p) in str(e) or column in str(e)
                return
        for s in got:
            assert isinstance(s.key, str)
            assert sum(x is not None for x in (s.path, s.data, s.error)) == 1
            if s.error is not None:
                assert str(p) in s.error

    check()


# --------------------------------------------------------------------------------------------
# model folders
# --------------------------------------------------------------------------------------------


def test_fuzz_model_folders(tmp_path, tiny_model_dir):
    """A damaged config.json or safetensors file: the model loads or a ConfigError /
    CheckpointError names the file - and a config that asks for an enormous model is refused
    before the memory is taken."""
    from joint_core import NaturalnessScorer

    config = json.loads((tiny_model_dir / "config.json").read_text())
    leaves = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        else:
            leaves.append(path)

    walk(config, ())
    n = [0]
    odd_values = st.one_of(json_values, st.sampled_from([0, -1, 1e9, 10**12, 2**63, float("nan"), "", [], {}, None,
                                                         True, 3.5, 64, 4096, 100_000]),
                           st.integers(1, 128), st.sampled_from(["pooled", "none", "input", "resize", "bilinear"]))

    @given(data=st.data(), what=st.sampled_from(["benign", "config", "config", "config", "weights", "config bytes"]))
    def check(data, what):
        n[0] += 1
        d = tmp_path / f"m{n[0]}"
        shutil.copytree(tiny_model_dir, d)
        if what == "benign":   # values a user may edit: the model still loads
            cfg = json.loads(json.dumps(config))
            cfg["fusion"]["bias"] = data.draw(st.floats(-10, 10))
            cfg["fusion"]["technical_weight"] = data.draw(st.floats(-2, 2))
            cfg["description"] = data.draw(names)
            (d / "config.json").write_text(json.dumps(cfg))
        elif what == "config":
            cfg = json.loads(json.dumps(config))
            for _ in range(data.draw(st.integers(1, 3))):
                path = data.draw(st.sampled_from(leaves))
                node = cfg
                for k in path[:-1]:
                    node = node[k]
                node[path[-1]] = data.draw(odd_values)
            (d / "config.json").write_text(json.dumps(cfg))
        elif what == "config bytes":
            (d / "config.json").write_bytes(data.draw(st.binary(max_size=100)))
        else:
            w = next(d.glob("*.safetensors"))
            raw = bytearray(w.read_bytes())
            how = data.draw(st.sampled_from(["header length", "header", "truncate"]))
            if how == "header length":
                raw[:8] = data.draw(st.sampled_from([0, 1, 2**40, 2**64 - 1, len(raw)])).to_bytes(8, "little")
            elif how == "header":
                hlen = int.from_bytes(raw[:8], "little")
                for _ in range(data.draw(st.integers(1, 6))):
                    raw[8 + data.draw(st.integers(0, hlen - 1))] = data.draw(st.integers(32, 126))
            else:
                raw = raw[:data.draw(st.integers(0, len(raw)))]
            w.write_bytes(bytes(raw))
        with bounded("model folder"):
            try:
                scorer = NaturalnessScorer.from_pretrained(d, device="cpu")
                assert what != "benign" or scorer.config.description == cfg["description"]
            except (ConfigError, CheckpointError) as e:
                named_error("model folder")
                assert what != "benign", e
                assert str(d) in str(e), e
                if os.environ.get("JOINT_FUZZ_SHOW"):
                    print("model folder:", str(e)[:200])

    check()


# --------------------------------------------------------------------------------------------
# ComfyUI node inputs
# --------------------------------------------------------------------------------------------


def test_fuzz_comfyui_node_inputs(tmp_path, tiny_model_dir):
    pytest.importorskip("comfyui_joint")
    from test_comfyui_nodes import FakeComfy
    from comfyui_joint import host, nodes

    number = st.one_of(st.integers(1, 6), st.integers(1, 6), st.integers(-3, 10), st.floats(allow_nan=True),
                       st.sampled_from(["8", True, None, 2.0, 1.5]))

    @st.composite
    def images(draw):
        if draw(st.integers(0, 3)) == 0:   # anything
            obj = draw(arrays_and_tensors())
            if isinstance(obj, list):
                obj = obj[0]
            return torch.from_numpy(obj.copy(order="C")) if isinstance(obj, np.ndarray) else obj
        b, h, w = draw(st.integers(0, 5)), draw(st.integers(1, 40)), draw(st.integers(1, 40))
        c = draw(st.sampled_from([3, 3, 1, 4]))
        x = torch.rand(b, h, w, c, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
        odd = draw(st.sampled_from(["none", "none", "nan", "inf", "out of range", "fp16", "non-contiguous"]))
        if odd == "nan" and x.numel():
            x.view(-1)[0] = float("nan")
        elif odd == "inf" and x.numel():
            x.view(-1)[-1] = float("inf")
        elif odd == "out of range":
            x = x * 3 - 1
        elif odd == "fp16":
            x = x.half()
        elif odd == "non-contiguous":
            x = x.transpose(1, 2)
        return x

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JOINT_HOME", str(tmp_path / "joint-home"))
        fake = FakeComfy(tmp_path / "comfy", mp)
        host.register_model_folder()
        shutil.copytree(tiny_model_dir, fake.models_dir / "naturalness" / "tiny")
        model = nodes.LoadNaturalnessModel().load("tiny")[0]

        @given(node=st.sampled_from(["score", "filter", "best", "preview"]), images=images(), batch=number,
               k=number, threshold=number, axis=st.sampled_from(["naturalness", "technical", "bogus", ""]),
               rank_by=st.sampled_from(["model default", "naturalness", "weighted mix", "nope"]),
               weight=number, if_empty=st.sampled_from(["skip downstream", "error", "pass empty", "x"]))
        def check(node, images, batch, k, threshold, axis, rank_by, weight, if_empty):
            title = {"score": "Score Naturalness", "filter": "Filter by Naturalness", "best": "Best of N",
                     "preview": "Preview Naturalness"}[node]
            with bounded("ComfyUI node inputs"):
                try:
                    if node == "score":
                        nodes.ScoreNaturalness().score([model], [images], [batch])
                    elif node == "filter":
                        nodes.FilterByNaturalness().filter(model, images, axis, threshold, if_empty, batch)
                    elif node == "best":
                        nodes.BestOfN().best_of_n(model, images, k, rank_by, None, weight, weight, weight,
                                                  if_empty=if_empty, batch_size=batch)
                    else:
                        nodes.PreviewNaturalness().preview(model, images, batch)
                except (ValueError, TypeError) as e:
                    named_error("ComfyUI node inputs")
                    msg = str(e)
                    assert msg.startswith(title), msg

        check()


# --------------------------------------------------------------------------------------------
# what the fuzzing found, kept as plain regression tests (each failed before its fix)
# --------------------------------------------------------------------------------------------


def test_found_zero_dim_uint16_array_is_an_item_error():
    items = collect_images(np.array(7, dtype=np.uint16))
    assert len(items) == 1 and not items[0].ok and "input 0" in items[0].error


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_found_reversed_one_element_views_are_read(dtype):
    """numpy calls a reversed view of one element contiguous, but its stride stays negative."""
    items = collect_images(np.zeros(1, dtype)[::-1])   # not an image: a named error, no ValueError
    assert len(items) == 1 and not items[0].ok
    img = np.zeros((1, 8, 3), dtype)[::-1]   # one row: an image
    assert collect_images(img)[0].ok


@pytest.mark.parametrize("fmt", [".jsonl", ".json"])
def test_found_score_rows_of_the_wrong_types_are_named(tmp_path, fmt):
    p = tmp_path / f"s{fmt}"
    rec = {"source": "a.png", "technical": "high", "rationality": 1, "naturalness": 2, "error": None}
    p.write_text(json.dumps([rec]) if fmt == ".json" else json.dumps(rec) + "\n")
    with pytest.raises(OutputError, match="'technical' should be a number"):
        list(read_rows(str(p)))
    rec.update(technical=1.0, source=5)
    p.write_text(json.dumps([rec]) if fmt == ".json" else json.dumps(rec) + "\n")
    with pytest.raises(OutputError, match="'source' should be text"):
        list(read_rows(str(p)))


def test_found_csv_table_cell_past_the_csv_limit_loses_only_its_row(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text('image,id\na.png,1\n"' + "x" * 200_000 + '",2\nb.png,3\n')
    got = list(Table(str(p), "image", "id").samples())
    assert [s.path for s in got] == ["a.png", None, "b.png"]
    assert str(p) in got[1].error and "field limit" in got[1].error
    bad_header = tmp_path / "h.csv"
    bad_header.write_text('"' + "x" * 200_000 + '"\n')
    with pytest.raises(InputError, match="h.csv"):
        Table(str(bad_header), "image")


def test_found_damaged_parquet_table_keeps_the_rows_before_the_damage(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": [f"{i}.png" for i in range(600)]}), p, row_group_size=256)
    meta = pq.ParquetFile(p).metadata
    start = meta.row_group(2).column(0).data_page_offset   # damage the last row group's data page
    data = bytearray(p.read_bytes())
    data[start + 10:start + 60] = b"\xff" * 50
    p.write_bytes(bytes(data))
    got = list(Table(str(p), "image").samples())
    assert [s.path for s in got[:512]] == [f"{i}.png" for i in range(512)]
    assert got[-1].error and str(p) in got[-1].error


def test_found_parquet_keeps_messages_that_quote_names_not_utf8(tmp_path):
    pytest.importorskip("pyarrow")
    p = tmp_path / "s.parquet"
    bad = os.fsdecode(b"/imgs/\xff.png")
    write_rows(str(p), iter([{"source": bad, "technical": None, "rationality": None, "naturalness": None,
                              "error": f"{bad}: cannot read", "warning": f"{bad}: flagged"}]))
    (row,) = read_rows(str(p))
    assert row["source"] == bad
    assert row["error"] == "/imgs/\\xff.png: cannot read" and row["warning"] == "/imgs/\\xff.png: flagged"


def test_found_a_config_timm_cannot_build_names_the_folder(tmp_path, tiny_model_dir):
    from joint_core import NaturalnessScorer

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["technical"]["backbone"] = "pooled"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config\.json: cannot build .*pooled"):
        NaturalnessScorer.from_pretrained(d, device="cpu")
    cfg["technical"]["backbone"] = json.loads((tiny_model_dir / "config.json").read_text())["technical"]["backbone"]
    cfg["technical"]["head_hidden"] = 100_000   # an enormous head the weights do not have: refused unbuilt
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not fit"):
        NaturalnessScorer.from_pretrained(d, device="cpu")
