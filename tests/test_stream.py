"""The streaming core (joint_core.stream): score_iter against score, sources, shards, score files
that survive a kill, and memory that does not grow with the number of images."""

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from joint_core.stream import (FileList, OutputError, Paths, Sink, open_inputs, read_rows, shard)
from joint_core.stream import sinks as sinks_mod
from joint_core.stream.sources import InputError, KeySetHash, TarShard

AXES = ("technical", "rationality", "naturalness")


@pytest.fixture
def image_dir(tmp_path, photos):
    """Nine real photos at several sizes (PNG and JPEG, in two folders) and one broken file."""
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    names = ["astronaut", "coffee", "chelsea"]
    for i in range(9):
        img = Image.fromarray(photos[names[i % 3]]).resize((48 + 8 * i, 40 + 4 * (i % 4)))
        if i % 2:
            img.save(d / f"{i}.png")
        else:
            img.save(d / "sub" / f"{i}.jpg", quality=90)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    return d


def _scores(records):
    return {r["source"]: (r["technical"], r["rationality"], r["naturalness"], bool(r["error"])) for r in records}


def _reference(scorer, paths):
    res = scorer.score(list(paths), batch_size=4)
    return {r["source"]: (r["technical"], r["rationality"], r["naturalness"], bool(r["error"]))
            for r in res.to_records()}


# --------------------------------------------------------------------------------------------
# score_iter == score, bit for bit
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_score_iter_equals_score_bit_for_bit(tiny_scorer, image_dir, workers):
    paths = sorted(str(p) for p in image_dir.rglob("*") if p.is_file())
    with pytest.warns(UserWarning, match="could not be scored"):
        ref = _reference(tiny_scorer, paths)
    batches = list(tiny_scorer.score_iter(paths, batch_size=3, num_workers=workers, progress=False))
    records = [r for b in batches for r in b]
    assert [r["source"] for r in records] == paths                  # input order, whatever the workers
    assert [r["index"] for r in records] == list(range(len(paths)))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert _scores(records) == ref                                  # exact float equality, errors alike
    broken = [r for r in records if r["source"].endswith("broken.png")][0]
    assert broken["naturalness"] is None and "broken.png" in broken["error"]


def test_score_iter_takes_in_memory_images_and_generators(tiny_scorer, photos):
    chw = torch.from_numpy(photos["coffee"]).permute(2, 0, 1)[:, :64, :80].contiguous()
    batch = torch.stack([chw, chw.flip(-1)])                       # one input, two images
    inputs = [Image.fromarray(photos["chelsea"][:50, :70]), batch, np.full((3, 3), np.nan)]
    with pytest.warns(UserWarning):
        ref = tiny_scorer.score(inputs)
    got = [r for b in tiny_scorer.score_iter((x for x in inputs), batch_size=2, progress=False) for r in b]
    assert len(got) == 4 and [r["index"] for r in got] == [0, 1, 2, 3]
    for i, r in enumerate(got):
        for ax in AXES:
            v = float(getattr(ref, ax)[i])
            assert (r[ax] is None and v != v) or r[ax] == v
    assert got[3]["error"] and "NaN" in got[3]["error"]


def test_decoding_threads_give_the_same_items_in_order_and_leave_in_memory_images_here(image_dir, photos,
                                                                                      monkeypatch):
    import threading

    from joint_core.preprocess import loader
    from joint_core.stream import iter_batches

    paths = sorted(str(p) for p in image_dir.rglob("*") if p.is_file())
    inputs = paths[:4] + [photos["coffee"]] + paths[4:] + [np.zeros((64, 64, 3), np.uint8)]
    seen = []
    real = loader.load_sample

    def spy(sample, *args, **kwargs):
        seen.append((sample.key, threading.current_thread().name))
        return real(sample, *args, **kwargs)

    monkeypatch.setattr(loader, "load_sample", spy)
    runs = {}
    for threads in (1, 3):
        seen.clear()
        batches = list(iter_batches(inputs, batch_size=4, threads=threads))
        runs[threads] = [(it.source, it.error, it.warning, None if it.tensor is None else it.tensor.clone())
                         for b in batches for it in b]
        assert [len(b) for b in batches] == [4, 4, 4]
        names = dict(seen)
        here = threading.current_thread().name
        if threads == 1:
            assert set(names.values()) == {here}
        else:   # files on the decoding threads, in-memory images in this thread (torch work stays here)
            assert all(names[p].startswith("joint-decode") for p in paths)
            assert names["input 4"] == here and names["input 11"] == here
    one, three = runs[1], runs[3]
    assert [r[0] for r in one] == [r[0] for r in three] == paths[:4] + ["input 4"] + paths[4:] + ["input 11"]
    for a, b in zip(one, three):
        assert a[1:3] == b[1:3] and (a[3] is None) == (b[3] is None)
        assert a[3] is None or torch.equal(a[3], b[3])
    assert sum(r[1] is not None for r in three) == 1 and "broken.png" in [r for r in three if r[1]][0][1]
    assert "nearly uniform" in three[-1][2]                           # flagged the same on either path



def test_decoding_threads_leave_the_warning_filters_as_they_were(tmp_path):
    """Decoding silences Pillow's decompression-bomb warning around open() with
    warnings.catch_warnings, which swaps one process-wide list: overlapping opens on the decoding
    threads must not leave the "ignore" filter installed (nor lose the caller's filters)."""
    import warnings

    from joint_core.stream import iter_batches

    rng = np.random.default_rng(0)
    paths = []
    for i in range(48):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)                # the caller's own filter
        before = list(warnings.filters)
        for _ in range(15):
            items = [it for b in iter_batches(paths, batch_size=48, threads=8) for it in b]
            assert len(items) == 48 and all(it.ok for it in items)
        assert warnings.filters == before

def test_iter_batches_checks_its_arguments(tiny_scorer):
    from joint_core.stream import iter_batches

    for kwargs in ({"batch_size": 0}, {"num_workers": -1}, {"prefetch": 0}, {"batch_size": 2.5}, {"threads": 0},
                   {"threads": 1.5}, {"threads": True}):
        with pytest.raises(ValueError):
            next(iter_batches(["x.png"], **kwargs))


# --------------------------------------------------------------------------------------------
# memory does not grow with the number of images
# --------------------------------------------------------------------------------------------

_MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys
    from joint_core import NaturalnessScorer
    from joint_core.stream import open_inputs, ScoreJob
    model, folder, n, workers, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    scorer = NaturalnessScorer.from_pretrained(model, device="cpu")
    paths = sorted(open_inputs([folder]).paths)[:n]
    from joint_core.stream import Paths
    job = ScoreJob(Paths(paths), out=out, mode="overwrite")
    outcome = job.run(lambda s: scorer.score_iter(s, batch_size=8, num_workers=workers, progress=False),
                      progress=False)
    assert outcome.scored == n, outcome
    # this process's own peak (VmHWM): ru_maxrss would keep the test runner's peak across exec
    hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
    print(hwm // 1024, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
""")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_does_not_depend_on_the_number_of_images(tmp_path):
    """The old `joint score` held every decoded image (0.85 MB each here): 260 more images added
    about 230 MB. Streaming must stay flat: under 40 MB apart for the main process."""
    from joint_core import NaturalnessScorer, get_preset

    torch.manual_seed(0)
    cfg = get_preset("tiny-test")
    cfg = cfg.replace(preprocess=cfg.preprocess.__class__(**{**cfg.preprocess.__dict__, "max_side": 64}))
    model = tmp_path / "model"
    NaturalnessScorer.from_config(cfg, device="cpu").save_pretrained(model)  # cheap past the decode
    d = tmp_path / "many"
    d.mkdir()
    yy, xx = np.mgrid[0:512, 0:576]
    for i in range(300):                    # 30 smooth images (small files, 0.85 MB decoded), 300 names
        if i < 30:
            img = np.stack([(xx + 3 * i) % 256, (yy + 5 * i) % 256, (xx + yy + i) % 256], -1).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i:04d}.png", compress_level=1)
        else:
            os.link(d / f"{i % 30:04d}.png", d / f"{i:04d}.png")
    script = tmp_path / "mem.py"
    script.write_text(_MEMORY_SCRIPT)

    def peak(n):
        out = subprocess.run([sys.executable, str(script), str(model), str(d), str(n), "1",
                              str(tmp_path / f"s{n}.csv")], capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        main, child = map(int, out.stdout.split())
        return main, child

    small, large = peak(40), peak(300)
    assert large[0] - small[0] < 40, (small, large)     # MB, the main process
    assert large[1] - small[1] < 100, (small, large)    # MB, the decoding worker (fork: shared pages count)
    assert large[0] < 1500, large                       # a ceiling, whatever the machine


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------


def _tar(path, members, compressed=False):
    with tarfile.open(path, "w:gz" if compressed else "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_webdataset_tars_key_by_sample_and_score_like_the_files(tiny_scorer, image_dir, tmp_path):
    files = sorted(image_dir.rglob("*.png"))[:3] + sorted(image_dir.rglob("*.jpg"))[:2]
    members = []
    for i, f in enumerate(files):
        members.append((f"shard/{i:06d}.json", b"{}"))
        members.append((f"shard/{i:06d}{f.suffix}", f.read_bytes()))
        members.append((f"shard/{i:06d}.seg.png", b"not the image"))       # a second, non-image field
    members.append(("shard/000099.txt", b"a sample without an image"))
    members.append(("shard/000100.png", b"broken"))
    _tar(tmp_path / "a.tar", members)
    _tar(tmp_path / "b.tar.gz", members[:6], compressed=True)
    src = open_inputs([str(tmp_path / "a.tar"), str(tmp_path / "b.tar.gz")])
    samples = list(src.samples())
    keys = [s.key for s in samples]
    assert keys[:6] == [f"shard/{i:06d}" for i in range(5)] + ["shard/000100"]
    assert keys[6:] == ["shard/000000", "shard/000001"]
    assert samples[0].member is not None and samples[6].data is not None     # offsets vs streamed bytes
    assert src.skipped == {f"{tmp_path / 'a.tar'}: samples without an image member": 1}
    got = [r for b in tiny_scorer.score_iter(src, batch_size=4, num_workers=2, progress=False) for r in b]
    ref = tiny_scorer.score([str(f) for f in files])
    for i in range(5):
        assert [got[i][a] for a in AXES] == [float(getattr(ref, a)[i]) for a in AXES]
    for i in range(2):                                                   # the same images, streamed
        assert [got[6 + i][a] for a in AXES] == [got[i][a] for a in AXES]
    assert got[5]["error"] and "shard/000100" in got[5]["error"]


def test_a_damaged_tar_is_a_named_error_not_a_crash(tmp_path):
    _tar(tmp_path / "t.tar", [("a.png", b"x" * 3000), ("b.png", b"y" * 3000)])
    data = (tmp_path / "t.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:700])
    samples = list(TarShard(str(tmp_path / "cut.tar")).samples())
    assert samples and all(s.error is None or "cut.tar" in s.error for s in samples)
    missing = list(TarShard(str(tmp_path / "none.tar")).samples())
    assert len(missing) == 1 and "no such file" in missing[0].error


def test_parquet_and_csv_tables_with_paths_bytes_and_image_structs(tiny_scorer, image_dir, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    files = sorted(str(p) for p in image_dir.rglob("*.png"))[:3]
    blobs = [open(f, "rb").read() for f in files]
    pq.write_table(pa.table({"path": files, "n": [1, 2, 3]}), tmp_path / "paths.parquet")
    pq.write_table(pa.table({"img": blobs, "name": ["a", "b", "c"]}), tmp_path / "bytes.parquet")
    pq.write_table(pa.table({"image": [{"bytes": b, "path": f"x/{i}.png"} for i, b in enumerate(blobs)]}),
                   tmp_path / "hf.parquet")
    (tmp_path / "t.csv").write_text("file,label\n" + "".join(f"{f},x\n" for f in files) + ",empty\n")
    ref = tiny_scorer.score(files)
    want = [[float(getattr(ref, a)[i]) for a in AXES] for i in range(3)]
    cases = {
        "paths.parquet": (dict(column="path"), files),
        "bytes.parquet": (dict(column="img", id_column="name"), ["a", "b", "c"]),
        "hf.parquet": (dict(column="image"), ["x/0.png", "x/1.png", "x/2.png"]),
        "t.csv": (dict(column="file"), files),
    }
    for name, (kw, keys) in cases.items():
        src = open_inputs([str(tmp_path / name)], **kw)
        got = [r for b in tiny_scorer.score_iter(src, batch_size=2, progress=False) for r in b]
        assert [r["source"] for r in got[:3]] == keys, name
        assert [[r[a] for a in AXES] for r in got[:3]] == want, name
    assert "holds no image" in got[3]["error"] and "t.csv#3" in got[3]["source"]   # the empty CSV cell
    with pytest.raises(InputError, match="no such column.*it has path, n"):
        open_inputs([str(tmp_path / "paths.parquet")], column="jpg")
    with pytest.raises(InputError, match="--column"):
        open_inputs([str(tmp_path / "paths.parquet")])
    with pytest.raises(InputError, match="--column applies"):
        open_inputs([files[0]], column="path")


def test_files_from_lists_keep_names_as_bytes(tmp_path, image_dir):
    odd = tmp_path / os.fsdecode(b"odd-\xff\xfe.png")
    os.link(image_dir / "1.png", odd)
    lst = tmp_path / "list.txt"
    lst.write_bytes(b"\n".join([os.fsencode(image_dir / "1.png"), b"", os.fsencode(odd) + b"\r", b"  "]) + b"\n")
    keys = [s.key for s in FileList(str(lst)).samples()]
    assert keys == [str(image_dir / "1.png"), str(odd)]
    assert os.path.exists(keys[1])
    nul = tmp_path / "list0"
    nul.write_bytes(os.fsencode(image_dir / "1.png") + b"\0" + b"with\nnewline.png\0")
    assert [s.key for s in FileList(str(nul), null=True).samples()] == [str(image_dir / "1.png"), "with\nnewline.png"]
    with pytest.raises(InputError, match="no such file"):
        FileList(str(tmp_path / "nope.txt"))


# --------------------------------------------------------------------------------------------
# shards
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 7, 11])
def test_shards_partition_the_inputs_exactly_and_evenly(count):
    src = Paths([f"img{i:03d}.png" for i in range(23)])
    parts = [[s.key for s in shard(src.samples(), i, count)] for i in range(count)]
    flat = [k for p in parts for k in p]
    assert sorted(flat) == sorted(s.key for s in src.samples())       # every input ...
    assert len(flat) == len(set(flat)) == 23                          # ... exactly once
    assert max(map(len, parts)) - min(map(len, parts)) <= 1            # balanced
    again = [[s.key for s in shard(src.samples(), i, count)] for i in range(count)]
    assert again == parts                                              # deterministic


def test_shard_spec_is_checked():
    from joint_core.stream import parse_shard

    assert parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "-1/4", "1", "a/b", "1/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_key_set_hash_is_order_free_and_counts_duplicates():
    a, b, c = KeySetHash(), KeySetHash(), KeySetHash()
    for k in ["x", "y", os.fsdecode(b"\xff")]:
        a.add(k)
    for k in [os.fsdecode(b"\xff"), "y", "x"]:
        b.add(k)
    for k in ["x", "y", "y"]:
        c.add(k)
    assert a.hexdigest() == b.hexdigest() and a.count == b.count == c.count == 3
    assert c.hexdigest() != a.hexdigest()


# --------------------------------------------------------------------------------------------
# score files
# --------------------------------------------------------------------------------------------

_ODD = [os.fsdecode(b"bad-\xff\xfe.png"), "caf\u00e9 \u6f22.png", 'quote",comma.png', "new\nline.png", "plain.png"]


def _recs(names, start=0.0):
    return [{"source": n, "technical": start + i + 0.1, "rationality": 2.5, "naturalness": None if i == 1 else 3.25,
             "error": "unreadable" if i == 1 else None} for i, n in enumerate(names)]


@pytest.mark.parametrize("fmt", [".csv", ".jsonl", ".json", ".parquet"])
def test_score_files_round_trip_any_name_and_resume(tmp_path, fmt):
    if fmt == ".parquet":
        pytest.importorskip("pyarrow")
    out = str(tmp_path / f"s{fmt}")
    sink = Sink(out, "new")
    sink.write(_recs(_ODD[:3]))
    sink.close(finish=False)                     # as if killed: .json / .parquet are not final yet
    assert [r["source"] for r in read_rows(out)] == _ODD[:3]
    with pytest.raises(OutputError, match="already exists.*--resume"):
        Sink(out, "new")
    sink = Sink(out, "resume")
    assert sink.rows == 3
    sink.write(_recs(_ODD[3:], start=10))
    sink.close()
    rows = list(read_rows(out))
    assert [r["source"] for r in rows] == _ODD
    assert rows[0]["technical"] == 0.1 and rows[1]["naturalness"] is None and rows[1]["error"] == "unreadable"
    assert rows[3]["technical"] == 10.1
    if fmt == ".json":
        assert not os.path.exists(out + ".partial") and isinstance(json.load(open(out)), list)
    if fmt == ".csv":  # the bytes of the name are in the file as they are
        assert b"bad-\xff\xfe.png" in open(out, "rb").read()


def test_a_torn_last_row_is_cut_when_resuming(tmp_path):
    for fmt in (".csv", ".jsonl"):
        out = str(tmp_path / f"t{fmt}")
        sink = Sink(out, "new")
        sink.write(_recs(["a.png", "new\nline.png"]))
        sink.close()
        whole = open(out, "rb").read()
        with open(out, "ab") as f:   # a kill in the middle of the next batch's write
            f.write(b'"half\nof a name' if fmt == ".csv" else b'{"source": "c.png", "tech')
        assert [r["source"] for r in read_rows(out)] == ["a.png", "new\nline.png"]
        sink = Sink(out, "resume")
        assert sink.rows == 2 and open(out, "rb").read() == whole
        sink.write(_recs(["c.png"]))
        sink.close()
        assert [r["source"] for r in read_rows(out)] == ["a.png", "new\nline.png", "c.png"]


def test_parquet_parts_and_a_kill_between_part_and_journal(tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    monkeypatch.setattr(sinks_mod, "ROWS_PER_PART", 4)
    out = str(tmp_path / "s.parquet")
    sink = Sink(out, "new")
    for i in range(5):                           # 3 rows a batch: parts of 6, 6, then 3 in the journal
        sink.write(_recs([f"{i}-{j}.png" for j in range(3)]))
    sink.close(finish=False)
    parts = sorted(p.name for p in (tmp_path / "s.parquet").iterdir())
    assert parts == ["_joint.lock", "_journal-00002.jsonl", "part-00000.parquet", "part-00001.parquet"]
    # a kill after part 1 was renamed into place but before its journal was removed
    (tmp_path / "s.parquet" / "_journal-00001.jsonl").write_text(json.dumps(_recs(["dup.png"])[0]) + "\n")
    names = [r["source"] for r in read_rows(out)]
    assert len(names) == 15 and len(set(names)) == 15 and "dup.png" not in names
    sink = Sink(out, "resume")
    assert sink.rows == 15
    sink.close()
    assert sink.rows == 15
    assert sorted(p.name for p in (tmp_path / "s.parquet").iterdir()) == [
        "_joint.lock", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    table = pq.read_table(out)                   # the folder reads as one table
    assert table.num_rows == 15 and set(table.column_names) >= {"source", "naturalness", "source_bytes"}
    assert table.column("source").to_pylist() == names


@pytest.mark.parametrize("bad", ["dir", "under_file", "proc"])
def test_an_output_that_cannot_be_written_fails_before_any_work(tmp_path, bad):
    target = {"dir": tmp_path, "under_file": tmp_path / "f.txt" / "s.csv", "proc": "/proc/joint-s.csv"}[bad]
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(OutputError) as e:
        Sink(str(target), "new")
    assert str(target) in str(e.value)


def test_a_failed_write_keeps_the_whole_batches_before_it(tmp_path):
    out = str(tmp_path / "s.csv")
    sink = Sink(out, "new")
    sink.write(_recs(["a.png", "b.png"]))
    before = open(out, "rb").read()
    sink._file.f = _FlakyFile(sink._file.f)      # a disk that fills up in the middle of a batch
    with pytest.raises(OutputError, match="No space left"):
        sink.write(_recs(["c.png"]))
    assert open(out, "rb").read() == before and sink.rows == 2


class _FlakyFile:
    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(bytes(data[:7]))
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.f, name)


_NO_EXTRAS = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("ray", "pyarrow"):
                raise ImportError(f"blocked {name}")
    sys.meta_path.insert(0, Block())
    import joint_core, joint_core.stream, joint_core.cli
    joint_core.cli.build_parser()
    from joint_core.stream import Sink, read_rows, OutputError
    try:   # a score file that cannot be written is an OutputError (it was an InputError)
        Sink(sys.argv[1] + "/s.parquet", "new")
    except OutputError as e:
        print("PARQUET:", e)
    from joint_core.stream.ray_engine import RayEngine
    try:
        RayEngine(None)
    except ImportError as e:
        print("RAY:", e)
    assert "ray" not in sys.modules and "pyarrow" not in sys.modules
""")


def test_the_core_imports_without_ray_or_pyarrow_and_names_the_extra(tmp_path):
    out = subprocess.run([sys.executable, "-c", _NO_EXTRAS, str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "PARQUET: " in out.stdout and "joint-naturalness[parquet]" in out.stdout
    assert "RAY: " in out.stdout and "joint-naturalness[ray]" in out.stdout


@pytest.mark.parametrize("fmt", [".csv", ".parquet"])
def test_a_second_writer_is_refused_while_the_first_runs(tmp_path, fmt):
    """A resume started while the first run still writes would double rows: it is refused. The
    lock dies with its process, even by SIGKILL, so a killed run never blocks its resume."""
    if fmt == ".parquet":
        pytest.importorskip("pyarrow")
    out = str(tmp_path / f"s{fmt}")
    first = Sink(out, "new")
    first.write(_recs(["a.png"]))
    with pytest.raises(OutputError, match="another joint process"):
        Sink(out, "resume")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from joint_core.stream import Sink
        s = Sink({out!r}, "resume"); print("locked", flush=True); time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    first.close()
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(OutputError, match="another joint process"):
        Sink(out, "resume")
    holder.kill()
    holder.wait()
    again = Sink(out, "resume")                 # SIGKILL released it
    assert again.rows == 1
    again.close()


_QUIET = textwrap.dedent("""
    import signal, sys
    from joint_core.stream.loader import _quiet_worker
    _quiet_worker(0)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    try:
        raise ConnectionResetError(104, "Connection reset by peer")   # the main process went away
    except ConnectionResetError:
        sys.excepthook(*sys.exc_info())
    try:
        raise ValueError("a real bug")
    except ValueError:
        sys.excepthook(*sys.exc_info())
""")


def test_decoding_workers_leave_ctrl_c_to_the_main_process_and_stay_quiet_when_it_goes():
    """An interrupted run must end with one message, not a worker's traceback about a transfer
    the main process abandoned (seen once in test_sigint_stops_cleanly, a race)."""
    out = subprocess.run([sys.executable, "-c", _QUIET], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ConnectionResetError" not in out.stderr and "ValueError: a real bug" in out.stderr

