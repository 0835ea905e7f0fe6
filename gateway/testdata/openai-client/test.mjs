// The official openai client against a running kiln serve.
// KILN_BASE_URL (e.g. http://127.0.0.1:8080) comes from
// scripts/openai-client-test.sh, KILN_MODEL names the model to use, and
// KILN_AUTH says how the server admits requests:
//   keys     — KILN_API_KEY is a tenant's key; unknown keys and none are 401;
//   keyless  — a loopback server without tenants: any bearer (the SDKs
//              always send one) or none is the local tenant.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { toFile } from 'openai';
import { rgbaPNG } from '../rgba-png.mjs';

const baseURL = `${process.env.KILN_BASE_URL}/v1`;
const model = process.env.KILN_MODEL ?? 'tiny';
const mode = process.env.KILN_AUTH ?? 'keys';

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function assertPNG(bytes) {
  assert.ok(bytes.length > 8, 'image is empty');
  assert.deepEqual([...bytes.subarray(0, 8)], PNG_MAGIC, 'not a PNG');
}

// A 64×64 mask: the top-left quarter transparent (repaint), the rest opaque.
const MASK = rgbaPNG(64, 64, (x, y) => [0, 0, 0, x < 32 && y < 32 ? 0 : 255]);
const OPAQUE = rgbaPNG(64, 64, () => [0, 0, 0, 255]);

// client makes an SDK client that sends apiKey as its bearer, or (apiKey
// null) no Authorization header at all; every request's Authorization
// header is recorded in sent.
function client(apiKey, sent = []) {
  return new OpenAI({
    baseURL, apiKey: apiKey ?? 'unused', maxRetries: 0, timeout: 120_000,
    defaultHeaders: apiKey === null ? { Authorization: null } : undefined,
    fetch: (url, init) => {
      // (the SDK first calls fetch without init to probe FormData support)
      if (init) sent.push(new Headers(init.headers).get('authorization'));
      return fetch(url, init);
    },
  });
}

// The credentials every generation test runs with in this mode.
const credentials = mode === 'keyless'
  ? { 'a dummy key': 'sk-dummy-key-the-sdk-insists-on', 'no key': null }
  : { 'the tenant key': process.env.KILN_API_KEY };

for (const [who, key] of Object.entries(credentials)) {
  test(`[${mode}, ${who}] images.generate with b64_json returns n PNGs`, async () => {
    const sent = [];
    const res = await client(key, sent).images.generate({
      model, prompt: 'a lighthouse at dusk', n: 2, size: '64x64', response_format: 'b64_json', user: 'npm-test',
      // Kiln extension: few steps keep the test fast.
      steps: 3,
    });
    assert.equal(sent[0], key === null ? null : `Bearer ${key}`, 'Authorization header sent');
    assert.equal(typeof res.created, 'number');
    assert.equal(res.data.length, 2);
    for (const d of res.data) {
      assertPNG(Buffer.from(d.b64_json, 'base64'));
      assert.equal(d.revised_prompt, 'a lighthouse at dusk');
    }
  });

  test(`[${mode}, ${who}] images.generate with url returns a signed link that needs no key`, async () => {
    const res = await client(key).images.generate({ prompt: 'a red fox', size: '64x64', response_format: 'url', quality: 'low', steps: 2 });
    assert.equal(res.data.length, 1);
    const url = res.data[0].url;
    assert.match(url, /^http:\/\/.+\/v1\/images\/.+sig=/);
    const resp = await fetch(url);
    assert.equal(resp.status, 200);
    assert.equal(resp.headers.get('content-type'), 'image/png');
    assertPNG(new Uint8Array(await resp.arrayBuffer()));
  });

  test(`[${mode}, ${who}] invalid parameters raise BadRequestError naming the parameter`, async () => {
    await assert.rejects(
      client(key).images.generate({ prompt: 'x', size: 'huge' }),
      (err) => {
        assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}`);
        assert.equal(err.status, 400);
        assert.equal(err.param, 'size');
        assert.equal(err.type, 'invalid_request_error');
        assert.match(err.message, /size/);
        return true;
      },
    );
    await assert.rejects(client(key).images.generate({ prompt: 'x', n: 50 }), (err) => err.status === 400 && err.param === 'n');
    await assert.rejects(client(key).images.generate({ prompt: 'x', response_format: 'gif' }),
      (err) => err instanceof OpenAI.BadRequestError && err.param === 'response_format');
  });

  test(`[${mode}, ${who}] images.edit repaints the mask's transparent pixels (image[] array, b64_json and url)`, async () => {
    const src = await client(key).images.generate({ model, prompt: 'a teapot', size: '64x64', response_format: 'b64_json', steps: 2 });
    const png = Buffer.from(src.data[0].b64_json, 'base64');
    const sent = [];
    const res = await client(key, sent).images.edit({
      model, prompt: 'a red teapot', n: 2, size: '64x64', response_format: 'b64_json',
      image: [await toFile(png, 'teapot.png', { type: 'image/png' })],
      mask: await toFile(MASK, 'mask.png', { type: 'image/png' }),
      steps: 2, // Kiln extension
    });
    assert.equal(sent[0], key === null ? null : `Bearer ${key}`, 'Authorization header sent');
    assert.equal(res.data.length, 2);
    for (const d of res.data) {
      assertPNG(Buffer.from(d.b64_json, 'base64'));
      assert.equal(d.revised_prompt, 'a red teapot');
    }
    const byURL = await client(key).images.edit({
      prompt: 'a blue teapot', response_format: 'url', steps: 2,
      image: await toFile(png, 'teapot.png', { type: 'image/png' }),
      mask: await toFile(MASK, 'mask.png', { type: 'image/png' }),
    });
    const resp = await fetch(byURL.data[0].url);
    assert.equal(resp.status, 200);
    assertPNG(new Uint8Array(await resp.arrayBuffer()));
  });

  test(`[${mode}, ${who}] images.edit errors name the parameter`, async () => {
    const image = await toFile(OPAQUE, 'a.png', { type: 'image/png' });
    await assert.rejects(
      client(key).images.edit({ prompt: 'x', image, mask: await toFile(OPAQUE, 'm.png', { type: 'image/png' }) }),
      (err) => {
        assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}`);
        assert.equal(err.status, 400);
        assert.equal(err.param, 'mask');
        assert.equal(err.type, 'invalid_request_error');
        assert.match(err.message, /transparent/);
        return true;
      },
    );
    await assert.rejects(
      client(key).images.edit({ prompt: 'x', image: await toFile(OPAQUE, 'a.png', { type: 'image/png' }), size: 'huge' }),
      (err) => err instanceof OpenAI.BadRequestError && err.param === 'size',
    );
  });

  test(`[${mode}, ${who}] images.createVariation returns n variations (b64_json and url)`, async () => {
    const src = await client(key).images.generate({ model, prompt: 'a lighthouse', size: '64x64', response_format: 'b64_json', steps: 2 });
    const png = Buffer.from(src.data[0].b64_json, 'base64');
    const res = await client(key).images.createVariation({
      model, n: 2, response_format: 'b64_json', image: await toFile(png, 'lighthouse.png', { type: 'image/png' }), steps: 3,
    });
    assert.equal(res.data.length, 2);
    const [a, b] = res.data.map((d) => Buffer.from(d.b64_json, 'base64'));
    assertPNG(a);
    assertPNG(b);
    assert.ok(!a.equals(b), 'the two variations are identical');
    assert.equal(res.data[0].revised_prompt, 'a lighthouse', 'the PNG parameters\' prompt guides the variation');
    const byURL = await client(key).images.createVariation({ image: await toFile(png, 'l.png', { type: 'image/png' }), steps: 2 });
    const resp = await fetch(byURL.data[0].url);
    assert.equal(resp.status, 200);
    assertPNG(new Uint8Array(await resp.arrayBuffer()));
    await assert.rejects(
      client(key).images.createVariation({ image: await toFile(png, 'l.png', { type: 'image/png' }), n: 11 }),
      (err) => err instanceof OpenAI.BadRequestError && err.param === 'n',
    );
  });

  test(`[${mode}, ${who}] models.list lists Kiln models`, async () => {
    const ids = [];
    for await (const m of client(key).models.list()) ids.push(m.id);
    assert.ok(ids.includes(model), `models: ${ids}`);
  });
}

if (mode === 'keys') {
  test('[keys] OpenAI model names mean the default model', async () => {
    const res = await client(process.env.KILN_API_KEY).images.generate({ model: 'dall-e-3', prompt: 'a teapot', size: '64x64', response_format: 'b64_json', steps: 2 });
    assertPNG(Buffer.from(res.data[0].b64_json, 'base64'));
  });

  for (const [who, key] of Object.entries({
    'an unknown kiln key': 'kiln_wrongwrongwrong_' + 'x'.repeat(40),
    'a dummy key': 'sk-dummy-key-the-sdk-insists-on',
    'no key': null,
  })) {
    test(`[keys] ${who} raises AuthenticationError in OpenAI's shape`, async () => {
      const image = () => toFile(OPAQUE, 'a.png', { type: 'image/png' });
      for (const call of [
        () => client(key).images.generate({ prompt: 'x', size: '64x64' }),
        async () => client(key).images.edit({ prompt: 'x', image: await image() }),
        async () => client(key).images.createVariation({ image: await image() }),
      ]) {
        await assert.rejects(call(), (err) => {
          assert.ok(err instanceof OpenAI.AuthenticationError, `got ${err?.constructor?.name}`);
          assert.equal(err.status, 401);
          assert.equal(err.code, 'invalid_api_key');
          assert.equal(err.type, 'invalid_request_error');
          assert.ok(err.message.length > 0);
          return true;
        });
      }
    });
  }
}
