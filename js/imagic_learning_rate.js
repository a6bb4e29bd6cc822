// Imagic Finetune UNet: the learning rate follows the method. Its default is lora's (shown as 0.0001000);
// switching method to full sets full's (the paper's), and back, as long as the value is still one of the
// methods' defaults or 0 (= the method's default). A value the user typed stays. The defaults come from the
// server (GET /imagic/defaults: core/defaults.py), so this file holds no copy of them.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

let defaults = null; // {learning_rate: {method: rate}, method_default: 0}

async function loadDefaults() {
  if (!defaults) {
    const response = await api.fetchApi("/imagic/defaults");
    if (!response.ok) throw new Error(`Imagic: GET /imagic/defaults answered ${response.status}`);
    defaults = await response.json();
  }
  return defaults;
}

export function followMethod(learningRate, method, { learning_rate: rates, method_default: zero }) {
  const isDefault = learningRate === zero || Object.values(rates).some((d) => Math.abs(learningRate - d) <= d * 1e-6);
  return isDefault && method in rates ? rates[method] : learningRate;
}

app.registerExtension({
  name: "imagic.LearningRate",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "ImagicFinetuneUNet") return;
    await loadDefaults();
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const method = this.widgets?.find((w) => w.name === "method");
      const rate = this.widgets?.find((w) => w.name === "learning_rate");
      if (method && rate) {
        const callback = method.callback;
        method.callback = function (value, ...rest) {
          const out = callback?.apply(this, [value, ...rest]);
          rate.value = followMethod(rate.value, method.value, defaults);
          return out;
        };
      }
      return result;
    };
  },
});
