// The pack's workflow templates in the template browser: in the order a new user wants them, each with one
// line saying what it is (js/templates.json).
//
// ComfyUI 0.3.64 serves a custom-node pack's templates as bare file names in directory order
// (app/custom_node_manager.py, GET /workflow_templates), and frontend 1.27 shows each one's file name as its
// title and again, with - and _ as spaces, as its description (useTemplateWorkflows.getTemplateDescription);
// it has no field for a pack to describe a template. So: the list is put in our order where the frontend
// fetches it, and each card's description line is replaced by ours once the card is drawn.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PACK = new URL(import.meta.url).pathname.split("/")[2]; // /extensions/<pack>/imagic_templates.js
const INDEX = fetch(new URL("./templates.json", import.meta.url))
  .then((r) => (r.ok ? r.json() : []))
  .catch(() => []);

/** Our names in the index's order first, then any the index does not name, as the server listed them. */
export function ordered(names, index) {
  const rank = new Map(index.map((t, i) => [t.name, i]));
  const known = names.filter((n) => rank.has(n)).sort((a, b) => rank.get(a) - rank.get(b));
  return [...known, ...names.filter((n) => !rank.has(n))];
}

function describeCards(root, descriptions) {
  for (const card of root.querySelectorAll('[data-testid^="template-workflow-"]')) {
    const name = card.getAttribute("data-testid").slice("template-workflow-".length);
    const line = descriptions.get(name);
    if (!line) continue;
    const plain = name.replace(/[-_]/g, " ").trim(); // what the frontend wrote there
    for (const el of card.querySelectorAll("p, span, div")) {
      if (el.children.length === 0 && el.textContent.trim() === plain) {
        el.textContent = line;
        el.title = line;
        el.classList.add("imagic-template-description");
      }
    }
  }
}

app.registerExtension({
  name: "imagic.Templates",
  async setup() {
    const index = await INDEX;
    const descriptions = new Map(index.map((t) => [t.name, t.description]));
    const fetchTemplates = api.getWorkflowTemplates.bind(api);
    api.getWorkflowTemplates = async () => {
      const templates = await fetchTemplates();
      if (Array.isArray(templates?.[PACK])) templates[PACK] = ordered(templates[PACK], index);
      return templates;
    };
    new MutationObserver(() => describeCards(document.body, descriptions)).observe(document.body, {
      childList: true,
      subtree: true,
    });
  },
});
