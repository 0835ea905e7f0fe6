// Runs @saintno/comfyui-sdk, a published ComfyUI client, against Kiln's
// ComfyUI-compatible API (KILN_BASE_URL, KILN_API_KEY as a bearer token).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { rgbaPNG } from "../rgba-png.mjs";
import { ComfyApi, CallWrapper, PromptBuilder } from "@saintno/comfyui-sdk";

const base = process.env.KILN_BASE_URL;
const token = process.env.KILN_API_KEY;
assert.ok(base && token, "KILN_BASE_URL and KILN_API_KEY are required");
const workflow = JSON.parse(readFileSync(new URL("./workflow-txt2img.json", import.meta.url)));

const api = new ComfyApi(base, "kiln-client-test", { credentials: { type: "bearer_token", token } });
api.init(5, 500);
await api.waitForReady();
after(() => api.destroy());

function builder() {
  return new PromptBuilder(workflow, ["positive", "seed", "batch", "steps", "sampler", "scheduler", "checkpoint"], ["images"])
    .setInputNode("positive", "6.inputs.text")
    .setInputNode("seed", "3.inputs.seed")
    .setInputNode("batch", "5.inputs.batch_size")
    .setInputNode("steps", "3.inputs.steps")
    .setInputNode("sampler", "3.inputs.sampler_name")
    .setInputNode("scheduler", "3.inputs.scheduler")
    .setInputNode("checkpoint", "4.inputs.ckpt_name")
    .setOutputNode("images", "9");
}

function run(prompt) {
  return new Promise((resolve, reject) => {
    const progress = [];
    new CallWrapper(api, prompt)
      .onProgress((p) => progress.push(p))
      .onFinished((out, id) => resolve({ out, id, progress }))
      .onFailed((err) => reject(err))
      .run();
  });
}

test("a workflow runs and its images download", async () => {
  const prompt = builder().input("positive", "a blue square").input("seed", 1234).input("batch", 2).input("steps", 4)
    .input("sampler", "dpmpp_2m").input("scheduler", "karras");
  const { out, id, progress } = await run(prompt);
  assert.ok(id, "prompt id");
  const images = out.images.images;
  assert.equal(images.length, 2);
  for (const info of images) {
    const blob = await api.getImage(info);
    const bytes = new Uint8Array(await blob.arrayBuffer());
    assert.deepEqual([...bytes.slice(1, 4)], [0x50, 0x4e, 0x47], "a PNG");
  }
  assert.ok(progress.length > 0, "progress messages arrived");
  assert.equal(progress.at(-1).max, 4);
  const history = await api.getHistory(id);
  assert.equal(history.status.completed, true);
  assert.deepEqual(Object.keys(history.outputs), ["9"]);
});

test("catalogs answer in ComfyUI's shapes", async () => {
  const defs = await api.getNodeDefs("KSampler");
  assert.ok(defs.KSampler.input.required.sampler_name[0].includes("euler"));
  const checkpoints = (await api.getNodeDefs("CheckpointLoaderSimple")).CheckpointLoaderSimple.input.required.ckpt_name[0];
  assert.ok(checkpoints.includes("tiny"));
  const stats = await api.getSystemStats();
  assert.ok(stats.system.ram_total > 0);
  assert.ok(stats.devices.length > 0);
  const queue = await api.getQueue();
  assert.deepEqual(queue.queue_running, []);
  assert.deepEqual(queue.queue_pending, []);
});

test("an unsupported node is refused naming the node", async () => {
  const broken = structuredClone(workflow);
  broken["20"] = { class_type: "UpscaleModelLoader", inputs: { model_name: "4x.pth" } };
  const r = await api.fetchApi("/prompt", { method: "POST", body: JSON.stringify({ prompt: broken, client_id: "kiln-client-test" }) });
  assert.equal(r.status, 400);
  const body = await r.json();
  assert.equal(body.node_errors["20"].class_type, "UpscaleModelLoader");
});

test("an uploaded image feeds an img2img workflow", async () => {
  const { out } = await run(builder().input("seed", 5));
  const png = new Uint8Array(await (await api.getImage(out.images.images[0])).arrayBuffer());
  const up = await api.uploadImage(png, "input.png");
  assert.ok(up, "upload worked");
  const graph = structuredClone(workflow);
  graph["10"] = { class_type: "LoadImage", inputs: { image: up.info.filename } };
  graph["11"] = { class_type: "VAEEncode", inputs: { pixels: ["10", 0], vae: ["4", 2] } };
  graph["3"].inputs.latent_image = ["11", 0];
  graph["3"].inputs.denoise = 0.6;
  const { out: out2 } = await run(new PromptBuilder(graph, [], ["images"]).setOutputNode("images", "9"));
  assert.equal(out2.images.images.length, 1);
});

test("an inpaint workflow repaints Load Image's MASK (its transparent pixels)", async () => {
  // a blue 64×64 image whose top-left quarter is transparent
  const png = rgbaPNG(64, 64, (x, y) => [20, 40, 200, x < 32 && y < 32 ? 0 : 255]);
  const up = await api.uploadImage(new Uint8Array(png), "inpaint.png");
  assert.ok(up, "upload worked");
  for (const variant of ["VAEEncodeForInpaint", "SetLatentNoiseMask"]) {
    const graph = structuredClone(workflow);
    graph["10"] = { class_type: "LoadImage", inputs: { image: up.info.filename } };
    if (variant === "VAEEncodeForInpaint") {
      graph["11"] = { class_type: "VAEEncodeForInpaint", inputs: { pixels: ["10", 0], vae: ["4", 2], mask: ["10", 1], grow_mask_by: 6 } };
    } else {
      graph["12"] = { class_type: "VAEEncode", inputs: { pixels: ["10", 0], vae: ["4", 2] } };
      graph["11"] = { class_type: "SetLatentNoiseMask", inputs: { samples: ["12", 0], mask: ["10", 1] } };
    }
    graph["3"].inputs.latent_image = ["11", 0];
    const { out, id } = await run(new PromptBuilder(graph, [], ["images"]).setOutputNode("images", "9"));
    assert.equal(out.images.images.length, 1, variant);
    const bytes = new Uint8Array(await (await api.getImage(out.images.images[0])).arrayBuffer());
    assert.deepEqual([...bytes.slice(1, 4)], [0x50, 0x4e, 0x47], "a PNG");
    assert.equal((await api.getHistory(id)).status.completed, true);
  }
  // a mask that repaints nothing is refused naming the node
  const graph = structuredClone(workflow);
  graph["10"] = { class_type: "LoadImage", inputs: { image: up.info.filename } };
  graph["13"] = { class_type: "SolidMask", inputs: { value: 0, width: 64, height: 64 } };
  graph["11"] = { class_type: "VAEEncodeForInpaint", inputs: { pixels: ["10", 0], vae: ["4", 2], mask: ["13", 0], grow_mask_by: 6 } };
  graph["3"].inputs.latent_image = ["11", 0];
  const r = await api.fetchApi("/prompt", { method: "POST", body: JSON.stringify({ prompt: graph, client_id: "kiln-client-test" }) });
  assert.equal(r.status, 400);
  assert.equal((await r.json()).node_errors["11"].class_type, "VAEEncodeForInpaint");
});

test("/object_info lists the inpaint nodes", async () => {
  for (const n of ["VAEEncodeForInpaint", "SetLatentNoiseMask", "InpaintModelConditioning", "ImageToMask", "MaskToImage", "SolidMask", "InvertMask"]) {
    const defs = await api.getNodeDefs(n);
    assert.ok(defs[n], `${n} listed`);
  }
  assert.deepEqual((await api.getNodeDefs("LoadImage")).LoadImage.output, ["IMAGE", "MASK"]);
});
