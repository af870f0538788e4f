"""The node pack in ComfyUI's real front end: headless Chromium (Playwright) against the real server.

The server is conftest's ``comfyui`` fixture (shared with tests/test_comfyui_e2e.py), the browser
its ``chromium`` fixture (Debian's Chromium driven by Playwright for Python). Without them the
tests are skipped with the reason; CI installs both and runs them (``JOINT_CI=1``).

What a user does, done in the page: the pack's script loads without errors; each node is found in
the node search under its display name; each example workflow is opened from the Templates dialog,
queued with the Run button and runs, its scores appear on the nodes and its previews show the
annotated images. A last graph - Score and Best of N on four photographs, two of them blurred or
noisy - is built on the canvas and run; its screenshot is the README's. ``JOINT_SCREENSHOTS=DIR``
keeps the screenshots (by default they go to a temporary folder), and with them each example's
picture for the Templates dialog (``<workflow>.jpg``, committed beside the workflow).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

from comfyui_joint.nodes import NODE_DISPLAY_NAME_MAPPINGS

from conftest import REPO, photo, save_screenshot

pytestmark = pytest.mark.slow

WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
# what the examples need to run on a CPU in seconds: 64x64 images (8x8 latents), two sampling steps
CPU_SETTINGS = {"EmptyLatentImage": {"width": 64, "height": 64}, "KSampler": {"steps": 2}}
REPORTING = {"ScoreNaturalness", "FilterByNaturalness", "NaturalnessBestOfN", "PreviewNaturalness"}
VIEWPORT = {"width": 1440, "height": 960}
RUN_TIMEOUT = 600.0


@pytest.fixture(scope="module")
def server(comfyui):
    """The shared server, with what the example workflows load: a photograph as ``example.png``
    and a small random SD 1.5 checkpoint under the examples' file name."""
    import comfyui_server

    Image.fromarray(photo("chelsea")).save(comfyui.base / "input" / "example.png")
    comfyui_server.build_sd15_checkpoint(comfyui)
    return comfyui


class ComfyPage:
    """ComfyUI's page in a fresh browser context, recording everything that goes wrong with the
    pack's own files (its script under /extensions/joint/, its templates under
    /api/workflow_templates/joint/) - the front end's own missing files are not the pack's."""

    PACK_URLS = ("/extensions/joint/", "/workflow_templates/joint/")

    def __init__(self, browser, server):
        self.server = server
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.problems = []
        self.page.on("console", self._console)
        self.page.on("pageerror", self._page_error)
        self.page.on("response", self._response)
        self.page.on("requestfailed", lambda r: self._mine(r.url) and self.problems.append(
            f"request failed: {r.url} ({r.failure})"))

    def _mine(self, text: str) -> bool:
        return any(u in (text or "") for u in self.PACK_URLS)

    def _page_error(self, error) -> None:
        text = f"{error}\n{error.stack or ''}"
        if self._mine(text):
            self.problems.append(f"uncaught error: {text}")

    def _console(self, msg) -> None:
        where = (msg.location or {}).get("url", "")
        if msg.type in ("error", "warning") and (self._mine(where) or self._mine(msg.text)):
            self.problems.append(f"console {msg.type}: {msg.text} ({where})")

    def _response(self, response) -> None:
        if response.status >= 400 and self._mine(response.url):
            self.problems.append(f"HTTP {response.status}: {response.url}")

    def open(self) -> "ComfyPage":
        self.page.goto(self.server.url + "/", wait_until="load", timeout=180_000)
        self.page.wait_for_function("() => window.app && window.app.graph && window.app.extensions?.length",
                                    timeout=180_000)
        return self

    def close(self) -> None:
        self.context.close()

    def js(self, expression: str, arg=None):
        return self.page.evaluate(expression, arg)

    def new_blank_workflow(self) -> None:
        self.page.get_by_role("button", name="Create a new blank workflow").click()
        self.page.wait_for_function("() => app.graph.nodes.length === 0")

    def open_template(self, name: str) -> None:
        """Templates (side bar) -> joint -> the workflow's card, as a user opens an example."""
        self.page.get_by_role("button", name="Templates", exact=True).click()
        self.page.get_by_text("joint", exact=True).click(timeout=60_000)
        self.page.get_by_test_id(f"template-workflow-{name}").click(timeout=60_000)
        self.page.get_by_test_id(f"template-workflow-{name}").wait_for(state="detached", timeout=60_000)

    def nodes(self) -> list:
        return self.js("() => app.graph.nodes.map(n => ({id: n.id, type: n.type}))")

    def set_widgets(self, values_by_type: dict) -> None:
        self.js("""(byType) => { for (const n of app.graph.nodes)
                      for (const [name, v] of Object.entries(byType[n.type] || {})) {
                          const w = n.widgets.find(w => w.name === name); w.value = v; w.callback?.(v); } }""",
                values_by_type)

    def run(self) -> dict:
        """Press Run; the prompt's history entry once it finished."""
        with self.page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST",
                                       timeout=60_000) as queued:
            self.page.get_by_role("button", name="Run", exact=True).click()
        reply = queued.value.json()
        assert "prompt_id" in reply, f"the server refused the workflow: {json.dumps(reply)[:3000]}"
        return self.server.wait(reply["prompt_id"], RUN_TIMEOUT)

    def report(self, node_id: int) -> dict:
        """What the pack's script shows on a node: its report box's text, and whether it is on screen."""
        return self.js("""(id) => { const n = app.graph.getNodeById(id);
            const w = n.widgets?.find(w => w.name === 'naturalness_report');
            if (!w) return null;
            const el = w.element; const box = el?.getBoundingClientRect();
            return {text: el ? el.value : w.value,
                    shown: !!el && el.isConnected && box.width > 0 && box.height > 0}; }""",
                       node_id)

    def previews(self, node_id: int) -> list:
        """The images the front end shows on a node: their URLs and decoded sizes."""
        return self.js("""(id) => (app.graph.getNodeById(id).imgs || []).map(i => ({
                            src: i.src, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))""",
                       node_id)

    def wait_for_previews(self, node_id: int, count: int) -> list:
        self.page.wait_for_function("""([id, count]) => { const imgs = app.graph.getNodeById(id).imgs || [];
            return imgs.length === count && imgs.every(i => i.complete && i.naturalWidth > 0); }""",
                                    arg=[node_id, count], timeout=60_000)
        return self.previews(node_id)

    def wait_for_reports(self, node_ids) -> None:
        self.page.wait_for_function("""(ids) => ids.every(id => { const n = app.graph.getNodeById(id);
            return (n.widgets || []).some(w => w.name === 'naturalness_report' && w.value); })""",
                                    arg=list(node_ids), timeout=60_000)

    def focus(self, node_ids, centre, side: int) -> None:
        """Zoom (0.5 to 1) and pan so that these nodes fill a ``side`` x ``side`` square at ``centre``."""
        self.js("""([ids, centre, side]) => {
            const nodes = ids.map(id => app.graph.getNodeById(id));
            const title = LiteGraph.NODE_TITLE_HEIGHT;
            const x0 = Math.min(...nodes.map(n => n.pos[0])), y0 = Math.min(...nodes.map(n => n.pos[1] - title));
            const x1 = Math.max(...nodes.map(n => n.pos[0] + n.size[0]));
            const y1 = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
            const ds = app.canvas.ds;
            ds.scale = Math.max(0.5, Math.min(1, side / Math.max(x1 - x0, y1 - y0)));
            ds.offset[0] = centre[0] / ds.scale - (x0 + x1) / 2; ds.offset[1] = centre[1] / ds.scale - (y0 + y1) / 2;
            app.canvas.setDirty(true, true); }""", [list(node_ids), list(centre), side])
        self.page.wait_for_timeout(500)

    def show(self, scale: float, offset) -> None:
        """Put the canvas at a zoom where LiteGraph draws text (fit-to-view zooms too far out)."""
        self.js("""([scale, offset]) => { const ds = app.canvas.ds; ds.scale = scale;
                    ds.offset[0] = offset[0]; ds.offset[1] = offset[1]; app.canvas.setDirty(true, true); }""",
                [scale, list(offset)])
        self.page.wait_for_timeout(500)


@pytest.fixture
def ui(chromium, server, screenshots, request):
    page = ComfyPage(chromium, server).open()
    yield page
    if getattr(request.node, "failed_call", False):      # what the page looked like when it failed
        save_screenshot(page.page, screenshots / f"failed-{request.node.name}.png")
    page.close()


def test_the_pack_loads_in_the_page_without_errors(ui):
    assert "joint.naturalness.report" in ui.js("() => app.extensions.map(e => e.name)")
    registered = ui.js("() => Object.keys(LiteGraph.registered_node_types)")
    missing = [t for t in NODE_DISPLAY_NAME_MAPPINGS if t not in registered]
    assert not missing, f"node types missing from the front end: {missing}"
    titles = ui.js("() => Object.fromEntries(Object.entries(LiteGraph.registered_node_types)"
                   ".map(([k, v]) => [k, v.title]))")
    assert {t: titles[t] for t in NODE_DISPLAY_NAME_MAPPINGS} == NODE_DISPLAY_NAME_MAPPINGS
    ui.page.wait_for_timeout(2000)          # late console messages
    assert not ui.problems, "\n".join(ui.problems)


def test_every_node_is_found_by_its_display_name(ui):
    from playwright.sync_api import expect

    ui.new_blank_workflow()
    canvas = ui.page.locator("#graph-canvas")
    box = canvas.bounding_box()
    added = []
    search = ui.page.get_by_placeholder("Search Nodes...")
    for name in NODE_DISPLAY_NAME_MAPPINGS.values():
        # double-click on the empty canvas opens the node search (on a busy machine the page may
        # take the two clicks for two single ones: then again); the first hit must be the node
        for _ in range(5):
            canvas.dblclick(position={"x": box["width"] * 0.4, "y": box["height"] * 0.5})
            try:
                search.wait_for(state="visible", timeout=10_000)
                break
            except Exception:  # noqa: BLE001 - Playwright's TimeoutError: try once more
                continue
        search.fill(name)
        expect(ui.page.locator("li.p-autocomplete-option").first).to_have_attribute("aria-label", name,
                                                                                  timeout=30_000)
        search.press("Enter")
        ui.page.wait_for_function("() => app.graph.nodes.length === 1", timeout=30_000)
        added.append(ui.js("() => { const n = app.graph.nodes[0]; app.graph.remove(n); return [n.type, n.title]; }"))
    assert added == [[t, name] for t, name in NODE_DISPLAY_NAME_MAPPINGS.items()]
    assert not ui.problems, "\n".join(ui.problems)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_example_workflow_runs_from_the_ui(ui, workflow, screenshots):
    spec = json.loads(workflow.read_text())
    ui.open_template(workflow.stem)
    ui.page.wait_for_function("(n) => app.graph.nodes.length === n", arg=len(spec["nodes"]), timeout=60_000)
    assert sorted((n["id"], n["type"]) for n in spec["nodes"]) == sorted((n["id"], n["type"]) for n in ui.nodes())
    ui.set_widgets(CPU_SETTINGS)
    entry = ui.run()
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"]["messages"])[-3000:] \
        + "\n" + ui.server.tail()
    outputs = entry["outputs"]
    ours = [n for n in spec["nodes"] if n["type"] in REPORTING]
    assert ours, f"{workflow.name} uses none of the pack's scoring nodes"
    ui.wait_for_reports([n["id"] for n in ours])
    for n in ours:
        shown = ui.report(n["id"])
        sent = "\n\n".join(outputs[str(n["id"])]["text"])
        assert shown["text"] == sent and shown["shown"], (n["type"], shown, sent)
        if n["type"] == "ScoreNaturalness":
            records = outputs[str(n["id"])]["scores"]
            assert records and all(f"{r['naturalness']:8.3f}" in shown["text"] for r in records)
        if n["type"] == "PreviewNaturalness":
            files = outputs[str(n["id"])]["images"]
            imgs = ui.wait_for_previews(n["id"], len(files))
            for img, f in zip(imgs, files):
                assert f"filename={f['filename']}" in img["src"] and "type=temp" in img["src"]
    for n in spec["nodes"]:                         # every Save Image saved something
        if n["type"] == "SaveImage":
            assert outputs.get(str(n["id"]), {}).get("images"), (workflow.name, n["id"], sorted(outputs))
    ui.page.keyboard.press(".")                     # the whole graph, fitted into view
    ui.page.wait_for_timeout(500)
    save_screenshot(ui.page, screenshots / f"comfyui-{workflow.stem}.png")
    # the Templates dialog's card picture (example_workflows/<name>.jpg is made from this one):
    # the pack's nodes after the run, at a zoom where their reports are legible
    side, centre = 760, (VIEWPORT["width"] // 2, VIEWPORT["height"] // 2 + 50)
    ui.focus([n["id"] for n in ours], centre, side)
    png = ui.page.screenshot(clip={"x": centre[0] - side // 2, "y": centre[1] - side // 2, "width": side,
                                   "height": side})
    Image.open(io.BytesIO(png)).convert("RGB").resize((384, 384), Image.LANCZOS).save(
        screenshots / f"{workflow.stem}.jpg", quality=80)
    assert not ui.problems, "\n".join(ui.problems)


SHOWCASE = ("chelsea", "chelsea, blurred", "coffee", "coffee, noisy")


def showcase_images() -> list:
    """Four 256x256 photographs, two of them degraded (what Best of N should drop)."""
    cat = np.ascontiguousarray(photo("chelsea")[20:276, 100:356])
    cup = np.ascontiguousarray(photo("coffee")[100:356, 200:456])
    noisy = np.clip(cup + np.random.default_rng(0).normal(0, 40, cup.shape), 0, 255).astype(np.uint8)
    blurred = np.asarray(Image.fromarray(cat).filter(ImageFilter.GaussianBlur(3)))
    return [cat, blurred, cup, noisy]


def test_score_and_best_of_n_on_photographs(ui, screenshots):
    """The README's picture: a graph built on the canvas - Load Image (a 4-frame animated PNG,
    which it loads as one batch, and which the browser can show), Score Naturalness, Best of N by
    a mix of technical and rationality, the kept two previewed."""
    frames = [Image.fromarray(a) for a in showcase_images()]
    frames[0].save(ui.server.base / "input" / "showcase.png", save_all=True, append_images=frames[1:],
                   duration=600_000)          # the node's preview stays on the first frame
    ui.new_blank_workflow()
    ids = ui.js("""() => {
        const add = (type, pos, size, values = {}) => {
            const n = LiteGraph.createNode(type); n.pos = pos; app.graph.add(n);
            for (const [k, v] of Object.entries(values)) n.widgets.find(w => w.name === k).value = v;
            if (size) n.setSize(size);
            return n; };
        const image = add('LoadImage', [0, 0], [250, 330], {image: 'showcase.png'});
        const model = add('LoadNaturalnessModel', [0, 380], [250, 110]);
        const score = add('ScoreNaturalness', [280, 0], [520, 250]);
        const best = add('NaturalnessBestOfN', [280, 290], [520, 440], {k: 2, rank_by: 'weighted mix'});
        const preview = add('PreviewImage', [830, 60], [400, 300]);
        const link = (a, slot, b, input) => a.connect(slot, b, b.findInputSlot(input));
        link(model, 0, score, 'naturalness_model'); link(image, 0, score, 'images');
        link(model, 0, best, 'naturalness_model'); link(image, 0, best, 'images');
        link(best, 0, preview, 'images');
        return {score: score.id, best: best.id, preview: preview.id}; }""")
    entry = ui.run()
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"]["messages"])[-3000:]
    outputs = entry["outputs"]
    ui.wait_for_reports([ids["score"], ids["best"]])
    records = outputs[str(ids["score"])]["scores"]
    assert len(records) == 4 and all(r["error"] is None for r in records)
    mix = [(r["technical"] + r["rationality"]) / 2 for r in records]
    expected = sorted(range(4), key=lambda i: (-mix[i], i))[:2]
    best_text = ui.report(ids["best"])["text"]
    assert best_text.startswith("kept 2 of 4 by 0.5*technical + 0.5*rationality")
    ranked = [int(line.split()[1]) for line in best_text.splitlines()[2:4]]
    assert ranked == expected and sorted(expected) == [0, 2], best_text     # the clean photographs win
    kept = ui.wait_for_previews(ids["preview"], 2)
    assert [(k["width"], k["height"]) for k in kept] == [(256, 256)] * 2
    # graph (0, 0) at page (130, 170): clear of the side bar, the tool bar and the queue's toast
    ui.show(1.0, (130, 170))
    save_screenshot(ui.page, screenshots / "comfyui-score-best-of-n.png",
                    clip={"x": 115, "y": 130, "width": 1260, "height": 790})
    assert not ui.problems, "\n".join(ui.problems)
