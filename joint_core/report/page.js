
(() => {
  const data = JSON.parse(document.getElementById("joint-data").textContent);
  const axes = data.axes, rows = data.rows;
  const state = { axis: "naturalness", best: false, filterAxis: "naturalness", op: "lt", threshold: null,
                  group: "", page: 0, pageSize: data.pageSize };
  const $ = (id) => document.getElementById(id);
  const fmt = (v) => (v === null || v === undefined) ? "–" : v.toFixed(3);
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls;
                                   if (text !== undefined) e.textContent = text; return e; };
  function shown() {
    let list = rows.filter((r) => (!state.group || r.group === state.group) &&
      (state.threshold === null || (state.op === "lt" ? r[state.filterAxis] < state.threshold
                                                       : r[state.filterAxis] >= state.threshold)));
    const sign = state.best ? -1 : 1, ax = state.axis;
    // stable: ties keep the table's order
    return list.map((r, i) => [r, i]).sort((a, b) => sign * (a[0][ax] - b[0][ax]) || a[1] - b[1]).map((p) => p[0]);
  }
  function card(r) {
    const c = el("div", "card");
    c.dataset.source = r.source;
    for (const ax of axes) c.dataset[ax] = r[ax];
    const t = el("div", "thumb");
    if (r.thumb) { const img = el("img"); img.decoding = "async"; img.loading = "lazy"; img.alt = r.source;
                   img.src = r.thumb; t.appendChild(img); }
    else t.appendChild(el("div", "none", r.thumbError || "no image"));
    c.appendChild(t);
    const s = el("div", "scores");
    for (const ax of axes) { s.appendChild(el("span", ax === state.axis ? "key" : "", ax));
                             s.appendChild(el("span", ax === state.axis ? "key" : "", fmt(r[ax]))); }
    c.appendChild(s);
    const name = el("div", "name", r.source.split(/[\\/]/).pop()); name.title = r.source; c.appendChild(name);
    if (r.group !== null && r.group !== undefined) c.appendChild(el("div", "extra", r.group));
    for (const [k, v] of Object.entries(r.extra)) c.appendChild(el("div", "extra", k + ": " + v));
    return c;
  }
  function render() {
    const list = shown();
    const pages = Math.max(1, Math.ceil(list.length / state.pageSize));
    state.page = Math.min(state.page, pages - 1);
    const start = state.page * state.pageSize, part = list.slice(start, start + state.pageSize);
    const grid = $("grid");
    grid.replaceChildren(...part.map(card));   // only this page's images are in the document
    $("page-state").textContent = list.length
      ? `${start + 1}–${start + part.length} of ${list.length} images (page ${state.page + 1} of ${pages})`
      : `no image of ${rows.length} matches`;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
    for (const b of document.querySelectorAll("button.sort")) {
      const on = b.dataset.axis === state.axis;
      b.classList.toggle("active", on);
      b.textContent = b.dataset.axis + (on ? (state.best ? " \u25bc" : " \u25b2") : "");
    }
    $("sort-state").textContent = state.best ? "best first" : "worst first";
  }
  for (const b of document.querySelectorAll("button.sort")) b.addEventListener("click", () => {
    // a new axis: worst first; the same axis again: the other way round
    if (state.axis === b.dataset.axis) state.best = !state.best;
    else { state.axis = b.dataset.axis; state.best = false; }
    state.page = 0; render();
  });
  const refilter = () => {
    const v = $("threshold").value.trim();
    state.threshold = v === "" || isNaN(Number(v)) ? null : Number(v);
    state.filterAxis = $("filter-axis").value; state.op = $("filter-op").value;
    state.group = $("filter-group") ? $("filter-group").value : "";
    state.page = 0; render();
  };
  for (const id of ["threshold", "filter-axis", "filter-op", "filter-group"]) {
    if ($(id)) $(id).addEventListener("input", refilter);
  }
  $("filter-axis").value = state.filterAxis;
  $("page-size").addEventListener("input", () => {
    state.pageSize = Number($("page-size").value); state.page = 0; render(); });
  $("prev").addEventListener("click", () => { state.page--; render(); });
  $("next").addEventListener("click", () => { state.page++; render(); });
  render();
})();
