// The official openai client against a running kiln serve.
// KILN_BASE_URL (e.g. http://127.0.0.1:8080) and KILN_API_KEY come from
// scripts/openai-client-test.sh; KILN_MODEL names the model to use.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = `${process.env.KILN_BASE_URL}/v1`;
const apiKey = process.env.KILN_API_KEY;
const model = process.env.KILN_MODEL ?? 'tiny';
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120_000 });

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function assertPNG(bytes) {
  assert.ok(bytes.length > 8, 'image is empty');
  assert.deepEqual([...bytes.subarray(0, 8)], PNG_MAGIC, 'not a PNG');
}

test('images.generate with b64_json returns n PNGs', async () => {
  const res = await client.images.generate({
    model, prompt: 'a lighthouse at dusk', n: 2, size: '64x64', response_format: 'b64_json', user: 'npm-test',
    // Kiln extension: few steps keep the test fast.
    steps: 3,
  });
  assert.equal(typeof res.created, 'number');
  assert.equal(res.data.length, 2);
  for (const d of res.data) {
    assertPNG(Buffer.from(d.b64_json, 'base64'));
    assert.equal(d.revised_prompt, 'a lighthouse at dusk');
  }
});

test('images.generate with url returns a signed link that needs no key', async () => {
  const res = await client.images.generate({ prompt: 'a red fox', size: '64x64', response_format: 'url', quality: 'low', steps: 2 });
  assert.equal(res.data.length, 1);
  const url = res.data[0].url;
  assert.match(url, /^http:\/\/.+\/v1\/images\/.+sig=/);
  const resp = await fetch(url);
  assert.equal(resp.status, 200);
  assert.equal(resp.headers.get('content-type'), 'image/png');
  assertPNG(new Uint8Array(await resp.arrayBuffer()));
});

test('OpenAI model names mean the default model', async () => {
  const res = await client.images.generate({ model: 'dall-e-3', prompt: 'a teapot', size: '64x64', response_format: 'b64_json', steps: 2 });
  assertPNG(Buffer.from(res.data[0].b64_json, 'base64'));
});

test('invalid parameters raise BadRequestError naming the parameter', async () => {
  await assert.rejects(
    client.images.generate({ prompt: 'x', size: 'huge' }),
    (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}`);
      assert.equal(err.status, 400);
      assert.equal(err.param, 'size');
      assert.equal(err.type, 'invalid_request_error');
      assert.match(err.message, /size/);
      return true;
    },
  );
  await assert.rejects(client.images.generate({ prompt: 'x', n: 50 }), (err) => err.status === 400 && err.param === 'n');
});

test('a wrong key raises AuthenticationError', async () => {
  const bad = new OpenAI({ baseURL, apiKey: 'kiln_wrongwrongwrong_' + 'x'.repeat(40), maxRetries: 0 });
  await assert.rejects(bad.images.generate({ prompt: 'x' }), (err) => {
    assert.ok(err instanceof OpenAI.AuthenticationError, `got ${err?.constructor?.name}`);
    assert.equal(err.code, 'invalid_api_key');
    return true;
  });
});

test('models.list lists Kiln models', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes(model), `models: ${ids}`);
});
