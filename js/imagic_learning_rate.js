// Imagic Finetune UNet: the learning rate follows the method. Its default is lora's 1e-4 (shown as 0.0001000);
// switching method to full sets the paper's 5e-7 (and back), as long as the value is still one of the two
// defaults (nodes/finetune_unet.py DEFAULT_LEARNING_RATE) or 0 (= the method's default). A value the user
// typed stays.
import { app } from "../../scripts/app.js";

export const DEFAULT_LEARNING_RATE = { full: 5e-7, lora: 1e-4 };

export function followMethod(learningRate, method) {
  const defaults = Object.values(DEFAULT_LEARNING_RATE);
  const isDefault = learningRate === 0 || defaults.some((d) => Math.abs(learningRate - d) <= d * 1e-6);
  return isDefault && method in DEFAULT_LEARNING_RATE ? DEFAULT_LEARNING_RATE[method] : learningRate;
}

app.registerExtension({
  name: "imagic.LearningRate",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "ImagicFinetuneUNet") return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const method = this.widgets?.find((w) => w.name === "method");
      const rate = this.widgets?.find((w) => w.name === "learning_rate");
      if (method && rate) {
        const callback = method.callback;
        method.callback = function (value, ...rest) {
          const out = callback?.apply(this, [value, ...rest]);
          rate.value = followMethod(rate.value, method.value);
          return out;
        };
      }
      return result;
    };
  },
});
