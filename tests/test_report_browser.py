"""The `joint report` page in headless Chromium (conftest's ``chromium``; skipped without it, run in CI).

Two folders of the same photographs - ``model-a`` as they are, ``model-b`` blurred, noisy or
recompressed, plus a file that cannot be read - are scored by ``joint score --out`` with the
shipped model, and the report of that table is opened from disk with the network off. The page
must draw one card per scored image, reorder them when a sort header is clicked, filter them by a
threshold, page them, and show the group table the CSV gives. Its screenshot is the README's
(``JOINT_SCREENSHOTS=DIR`` keeps it: ``DIR/report.png``).
"""

from __future__ import annotations

import csv
import io
import os
import re

import numpy as np
import pytest
from PIL import Image, ImageFilter

from joint_core.cli import main

from conftest import photo, save_screenshot

pytestmark = pytest.mark.slow

AXES = ("technical", "rationality", "naturalness")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def degrade(a: np.ndarray, i: int) -> np.ndarray:
    img = Image.fromarray(a)
    if i % 3 == 0:
        return np.asarray(img.filter(ImageFilter.GaussianBlur(3)))
    if i % 3 == 1:
        noise = np.random.default_rng(i).normal(0, 30, a.shape)
        return np.clip(a + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=5)
    return np.asarray(Image.open(buf).convert("RGB"))


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    for folder in ("model-a", "model-b"):
        (root / folder).mkdir()
    for i, name in enumerate(PHOTOS):
        a = photo(name)
        a = a[: a.shape[0] // 2 * 2, : a.shape[1] // 2 * 2]
        a = np.asarray(Image.fromarray(a).resize((a.shape[1] * 360 // max(a.shape[:2]),
                                                  a.shape[0] * 360 // max(a.shape[:2])), Image.LANCZOS))
        Image.fromarray(a).save(root / "model-a" / f"{name}.png")
        Image.fromarray(degrade(a, i)).save(root / "model-b" / f"{name}.png")
    (root / "model-b" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\nthe rest is missing")
    out = root / "scores.csv"
    cwd = os.getcwd()
    os.chdir(root)                  # sources relative to the table's folder, where the report finds them
    try:
        assert main(["score", "model-a", "model-b", "--model", "default", "--device", "cpu",
                     "-o", str(out), "-q", "--no-progress"]) == 1             # the truncated file is not scored
    finally:
        os.chdir(cwd)
    rows = list(csv.DictReader(out.open()))
    return {"root": root, "csv": out, "rows": rows, "scored": [r for r in rows if not r["error"]]}


@pytest.fixture
def report_page(chromium, table, tmp_path):
    """Open a report of the table offline; yields (page, requests) - every URL the page asked for."""
    pages = []

    def open_report(**kw):
        out = tmp_path / f"report-{len(pages)}.html"
        assert main(["report", str(table["csv"]), "--out", str(out), "-q",
                     *[a for k, v in kw.items() for a in (f"--{k.replace('_', '-')}", str(v))]]) == 0
        context = chromium.new_context(viewport={"width": 1280, "height": 900}, offline=True)
        page = context.new_page()
        requests, errors = [], []
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.as_uri())
        page.wait_for_selector("#grid .card")
        pages.append((context, requests, errors))
        return page, requests, errors

    yield open_report
    for context, _, _ in pages:
        context.close()


def cards(page) -> list:
    return page.eval_on_selector_all(
        "#grid .card", "cs => cs.map(c => ({source: c.dataset.source, technical: +c.dataset.technical, "
                       "rationality: +c.dataset.rationality, naturalness: +c.dataset.naturalness, "
                       "img: c.querySelector('img') ? c.querySelector('img').naturalWidth : 0}))")


def order(rows, axis, best=False) -> list:
    keyed = sorted(enumerate(rows), key=lambda p: ((-1 if best else 1) * float(p[1][axis]), p[0]))
    return [r["source"] for _, r in keyed]


def test_report_page_sorts_filters_and_groups(report_page, table, screenshots):
    page, requests, errors = report_page()
    scored = table["scored"]
    # one card per scored image, worst naturalness first, each with its decoded thumbnail
    shown = cards(page)
    assert [c["source"] for c in shown] == order(scored, "naturalness")
    page.wait_for_function("() => [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth)")
    assert all(c["img"] > 0 for c in cards(page))
    summary = page.locator("#summary").inner_text()
    assert summary.startswith(f"{len(table['rows'])} images: {len(scored)} scored, 1 could not be scored")
    # a sort header: worst first, then - clicked again - best first
    page.locator("button.sort[data-axis=technical]").click()
    assert [c["source"] for c in cards(page)] == order(scored, "technical")
    page.locator("button.sort[data-axis=technical]").click()
    assert [c["source"] for c in cards(page)] == order(scored, "technical", best=True)
    assert "best first" in page.locator("#sort-state").inner_text()
    # a threshold: only the images below it (then at or above it)
    cut = float(np.median([float(r["rationality"]) for r in scored]))
    page.select_option("#filter-axis", "rationality")
    page.fill("#threshold", f"{cut}")
    below = [c["source"] for c in cards(page)]
    assert sorted(below) == sorted(r["source"] for r in scored if float(r["rationality"]) < cut) and below
    page.select_option("#filter-op", "ge")
    assert sorted(c["source"] for c in cards(page)) == sorted(r["source"] for r in scored
                                                             if float(r["rationality"]) >= cut)
    page.fill("#threshold", "")
    page.select_option("#filter-group", "model-b")
    assert sorted(c["source"] for c in cards(page)) == sorted(r["source"] for r in scored
                                                             if r["source"].startswith("model-b/"))
    page.select_option("#filter-group", "")
    # the group table is the CSV's: per folder, the count and the mean of each axis inside its interval
    got = page.eval_on_selector_all("#groups tbody tr", """trs => trs.map(tr => ({
        group: tr.dataset.group, n: +tr.querySelector('td.num').textContent,
        cells: [...tr.querySelectorAll('td[data-axis]')].map(td => [td.dataset.axis, td.textContent.trim()])}))""")
    assert [g["group"] for g in got] == ["model-a", "model-b"]
    for g in got:
        members = [r for r in scored if r["source"].startswith(g["group"] + "/")]
        assert g["n"] == len(members)
        for axis, text in g["cells"]:
            mean = float(np.mean([float(r[axis]) for r in members]))
            shown_mean, low, high = (float(v) for v in re.findall(r"[-\d.]+", text))
            assert shown_mean == pytest.approx(mean, abs=5e-4) and low <= shown_mean <= high
    failed = page.eval_on_selector_all("#failed tbody tr", "trs => trs.map(tr => tr.innerText)")
    assert len(failed) == 1 and failed[0].startswith("model-b/truncated.png") and "cannot decode" in failed[0]
    assert page.locator("figure.hist").count() == 3
    assert page.eval_on_selector_all("figure.hist[data-axis=naturalness] rect.bar",
                                     "bs => bs.reduce((s, b) => s + +b.dataset.count, 0)") == len(scored)
    # offline and self-contained: the file itself and inline data, nothing else
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert not errors, errors
    # the picture: naturalness worst first, no filter
    page.locator("button.sort[data-axis=naturalness]").click()
    page.select_option("#filter-axis", "naturalness")
    page.select_option("#filter-op", "lt")
    page.set_viewport_size({"width": 1280, "height": 1180})
    save_screenshot(page, screenshots / "report.png")


def test_report_pages_large_tables(report_page, table):
    """Only one page of cards - and of images - is in the document at a time."""
    page, _, errors = report_page(page_size=5)
    n = len(table["scored"])
    seen = []
    for p in range(-(-n // 5)):
        part = cards(page)
        assert len(part) == min(5, n - 5 * p) and page.locator("#grid img").count() == len(part)
        seen += [c["source"] for c in part]
        assert page.locator("#page-state").inner_text().endswith(f"(page {p + 1} of {-(-n // 5)})")
        if p < -(-n // 5) - 1:
            page.locator("#next").click()
    assert page.locator("#next").is_disabled() and seen == order(table["scored"], "naturalness")
    page.select_option("#page-size", "50")
    assert len(cards(page)) == n and page.locator("#prev").is_disabled()
    assert not errors, errors
