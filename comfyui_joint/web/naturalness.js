// Shows the report that the naturalness nodes send as `ui.text` in a read-only text box on the node.
// (The ComfyUI frontend shows `ui.images` by itself, but `ui.text` only on its own nodes.)
import { app } from "../../scripts/app.js";

const NODES = new Set(["ScoreNaturalness", "FilterByNaturalness", "NaturalnessBestOfN", "PreviewNaturalness"]);
const WIDGET = "naturalness_report";

function reportWidget(node) {
  let widget = node.widgets?.find((w) => w.name === WIDGET);
  if (widget) return widget;
  if (typeof node.addDOMWidget === "function") {
    const el = document.createElement("textarea");
    el.readOnly = true;
    el.spellcheck = false;
    Object.assign(el.style, {
      fontFamily: "monospace", fontSize: "11px", whiteSpace: "pre", overflow: "auto",
      width: "100%", boxSizing: "border-box", resize: "none",
    });
    widget = node.addDOMWidget(WIDGET, "customtext", el, {
      getValue: () => el.value,
      setValue: (v) => { el.value = v ?? ""; },
      getMinHeight: () => 120,
      serialize: false,
    });
  } else {
    widget = node.addWidget("text", WIDGET, "", () => {}, { serialize: false });
  }
  widget.serialize = false; // a display, not a parameter: never part of the prompt
  return widget;
}

function showReport(node, text) {
  const widget = reportWidget(node);
  if (widget.element) widget.element.value = text;
  widget.value = text;
  const [w, h] = node.computeSize();
  node.setSize([Math.max(node.size[0], w, 440), Math.max(node.size[1], h)]);
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "joint.naturalness.report",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.has(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = message?.text;
      if (text == null) return;
      showReport(this, Array.isArray(text) ? text.join("\n\n") : String(text));
    };
  },
});
