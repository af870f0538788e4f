"""The Ray engine on a real local Ray (2 CPUs, started once for this module): the same scores as a
single process, bit for bit, and every row exactly once when a scoring actor is killed mid-run."""

import os
import signal
import time

import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason="the Ray engine needs the ray extra")
pytest.importorskip("pyarrow")

from joint_core.stream import Paths, ScoreJob, read_rows  # noqa: E402
from joint_core.stream.ray_engine import RayEngine, score_dataset  # noqa: E402

AXES = ("technical", "rationality", "naturalness")


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory, photos):
    d = tmp_path_factory.mktemp("rayimgs")
    names = ["astronaut", "coffee", "chelsea", "rocket"]
    paths = []
    for i in range(48):
        p = d / f"{i:03d}.png"
        Image.fromarray(photos[names[i % 4]]).resize((120 + 4 * (i % 9), 100 + 2 * (i % 5))).save(p)
        paths.append(str(p))
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return paths + [str(d / "broken.png")]


@pytest.fixture(scope="module")
def reference(tiny_scorer, images):
    with pytest.warns(UserWarning):
        res = tiny_scorer.score(images, batch_size=4)
    return {r["source"]: (r["technical"], r["rationality"], r["naturalness"], r["error"] is None)
            for r in res.to_records()}


def _table(records):
    return {r["source"]: (r["technical"], r["rationality"], r["naturalness"], r["error"] is None) for r in records}


def test_ray_scores_equal_single_process_scores_bit_for_bit(local_ray, tiny_scorer, images, reference, tmp_path):
    out = tmp_path / "s.parquet"
    job = ScoreJob(Paths(images), out=str(out))
    job.plan()
    outcome = job.run(RayEngine(tiny_scorer, batch_size=4, actors=2), progress=False)
    assert outcome.total == len(images) and outcome.total_failed == 1
    rows = list(read_rows(str(out)))
    assert len(rows) == len(images) and _table(rows) == reference
    broken = [r for r in rows if r["source"].endswith("broken.png")][0]
    assert "broken.png" in broken["error"] and broken["error"].startswith(images[-1])
    # resume: nothing left, nothing doubled
    job = ScoreJob(Paths(images), out=str(out), mode="resume")
    assert job.plan().todo == 0
    assert job.run(RayEngine(tiny_scorer, batch_size=4, actors=2), progress=False).scored == 0
    assert len(list(read_rows(str(out)))) == len(images)


def _score_actor_pids():
    import psutil

    pids = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd and cmd[0].startswith("ray::MapWorker(MapBatches(ScoreActor))"):
            pids.append(p.pid)
    return pids


@pytest.mark.slow
def test_an_actor_killed_mid_run_costs_no_row(local_ray, tiny_scorer, images, reference, tmp_path):
    out = tmp_path / "k.csv"
    job = ScoreJob(Paths(images), out=str(out))
    job.plan()
    engine = RayEngine(tiny_scorer, batch_size=1, actors=2)
    killed = []
    got = []

    def on_batch(records):
        got.extend(records)
        if not killed:
            pids = _score_actor_pids()
            assert len(pids) >= 1
            os.kill(pids[0], signal.SIGKILL)        # an actor dies in the middle of the job
            killed.append((pids[0], len(got)))
            time.sleep(0.5)

    outcome = job.run(engine, on_batch=on_batch, progress=False)
    assert killed and killed[0][1] < len(images) // 2, killed        # it died with work left
    import psutil

    assert not psutil.pid_exists(killed[0][0]) or psutil.Process(killed[0][0]).status() == psutil.STATUS_ZOMBIE
    rows = list(read_rows(str(out)))
    assert len(rows) == len(images) == outcome.total                  # every row ...
    assert len({r["source"] for r in rows}) == len(images)            # ... exactly once
    assert _table(rows) == reference                                   # with the same scores


def test_score_dataset_adds_score_columns_to_a_ray_dataset(local_ray, tiny_scorer, images, reference):
    ds = ray.data.from_items([{"image": p, "n": i} for i, p in enumerate(images[:6])])
    rows = score_dataset(ds, tiny_scorer, column="image", batch_size=3).take_all()
    assert sorted(r["n"] for r in rows) == list(range(6))
    for r in rows:
        assert (r["technical"], r["rationality"], r["naturalness"], r["error"] is None) == reference[r["image"]]
