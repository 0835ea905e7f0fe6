// Validates /v1/openapi.json of a running kiln serve (KILN_BASE_URL) against
// the OpenAPI 3.1 specification's JSON Schema, and checks that /docs serves
// the rendered reference.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Validator } from "@seriousme/openapi-schema-validator";

const base = process.env.KILN_BASE_URL;
const key = process.env.KILN_API_KEY;
assert.ok(base, "KILN_BASE_URL is required");

async function get(path) {
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  const r = await fetch(base + path, { headers });
  return r;
}

test("the OpenAPI document is valid OpenAPI 3.1", async () => {
  const r = await get("/v1/openapi.json");
  assert.equal(r.status, 200);
  const doc = await r.json();
  assert.match(doc.openapi, /^3\.1\./);
  const v = new Validator();
  const res = await v.validate(doc);
  assert.ok(res.valid, "validation errors:\n" + JSON.stringify(res.errors, null, 2));
  // Every $ref resolves.
  const refs = JSON.stringify(doc).match(/"\$ref":"[^"]+"/g) || [];
  for (const ref of refs) {
    const name = ref.slice(8, -1).split("/").pop();
    assert.ok(doc.components.schemas[name] || (doc.components.parameters || {})[name] || (doc.components.responses || {})[name], `unresolved ${ref}`);
  }
  // The adapters are documented.
  assert.ok(doc.paths["/sdapi/v1/txt2img"].post.requestBody, "txt2img has a request schema");
});

test("/docs renders the reference", async () => {
  const r = await get("/docs");
  assert.equal(r.status, 200);
  assert.match(r.headers.get("content-type"), /text\/html/);
  assert.match(await r.text(), /openapi\.json/);
});
