// Imagic's training nodes (A: Optimize Embedding, B: Finetune UNet): a node added fresh from the node library
// starts with its seed's "control after generate" at "fixed", not the frontend's "randomize", so a second Run
// of an unchanged graph reuses the trained result instead of drawing a new seed and training again (minutes).
// The control stays: a user may still pick randomize/increment. A loaded workflow keeps what it stored (the
// frontend applies widgets_values after the node is created).
import { app } from "../../scripts/app.js";

export const FIXED_SEED_NODES = ["ImagicOptimizeEmbedding", "ImagicFinetuneUNet"];

app.registerExtension({
  name: "imagic.FixedTrainingSeed",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!FIXED_SEED_NODES.includes(nodeData.name)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const seed = this.widgets?.find((w) => w.name === "seed");
      const control = seed?.linkedWidgets?.find((w) => w.name === "control_after_generate")
        ?? this.widgets?.find((w) => w.name === "control_after_generate");
      if (control) control.value = "fixed";
      return result;
    };
  },
});
