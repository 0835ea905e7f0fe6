// Unit tests of the client's pure modules (no browser, no server).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  buildRequest, chosenSize, hiresSize, sizePresets, SDXL_BUCKETS, insertExtraNetwork, defaultSettings, defaultSize, effectiveLimits, etaSeconds, failureText, formatBytes, formatDuration,
  jobsAhead, progressText, queueText, settingsFromParams, sizeProblem, statusRank, submitErrorText, validateSettings,
} from '../js/format.js';
import { decodePreview } from '../js/preview.js';
import { snap8, outpaintSize, maskPixels, invertLayer, editProblem, editFields } from '../js/edit.js';

const account = {
  quota: { max_pixels: 1048576, max_steps: 150, max_n: 8 },
  limits: { min_side: 64, max_side: 4096, max_guidance: 30, max_seed: 2 ** 53 - 1, max_prompt_chars: 4000 },
};
const balanced = { name: 'balanced', width: 512, height: 512, steps: 25, guidance: 7, max_pixels: 589824, max_steps: 60, max_n: 4 };

// encodePreview mirrors the server's frame layout (server/events).
function encodePreview({ job, step, steps, width, height, index, jpeg }) {
  const h = 16 + job.length;
  const buf = new Uint8Array(h + jpeg.length);
  const dv = new DataView(buf.buffer);
  buf.set([0x4b, 0x50, 0x56, 0x31]);
  dv.setUint16(4, h);
  dv.setUint16(6, step);
  dv.setUint16(8, steps);
  dv.setUint16(10, width);
  dv.setUint16(12, height);
  buf[14] = index;
  buf[15] = job.length;
  for (let i = 0; i < job.length; i++) buf[16 + i] = job.charCodeAt(i);
  buf.set(jpeg, h);
  return buf.buffer;
}

test('preview frames decode', () => {
  const jpeg = new Uint8Array([0xff, 0xd8, 1, 2, 3, 0xff, 0xd9]);
  const p = decodePreview(encodePreview({ job: '01abc', step: 3, steps: 300, width: 96, height: 128, index: 2, jpeg }));
  assert.deepEqual({ ...p, jpeg: [...p.jpeg] }, { job: '01abc', step: 3, steps: 300, width: 96, height: 128, index: 2, jpeg: [...jpeg] });
});

test('broken preview frames are refused', () => {
  const good = new Uint8Array(encodePreview({ job: 'j', step: 1, steps: 2, width: 1, height: 1, index: 0, jpeg: new Uint8Array(4) }));
  assert.throws(() => decodePreview(good.slice(0, 10)), /not a preview/);
  const badMagic = good.slice();
  badMagic[0] = 0;
  assert.throws(() => decodePreview(badMagic), /not a preview/);
  const longHeader = good.slice();
  new DataView(longHeader.buffer).setUint16(4, 999);
  assert.throws(() => decodePreview(longHeader), /out of range/);
  const noJob = good.slice();
  noJob[15] = 0;
  assert.throws(() => decodePreview(noJob), /out of range/);
});

test('limits combine the quota and the profile', () => {
  const l = effectiveLimits(account, balanced);
  assert.equal(l.maxPixels, 589824);
  assert.equal(l.maxSteps, 60);
  assert.equal(l.maxN, 4);
  assert.equal(effectiveLimits(account, null).maxSteps, 150);
});

test('sizes are checked like the server does', () => {
  const l = effectiveLimits(account, balanced);
  assert.equal(sizeProblem(512, 512, l), '');
  assert.match(sizeProblem(500, 512, l), /multiple of 8 \(try 504\)/);
  assert.match(sizeProblem(32, 512, l), /from 64 to 4096/);
  assert.match(sizeProblem(1024, 1024, l), /1,048,576 pixels; your limit is 589,824/);
  assert.match(sizeProblem(NaN, 64, l), /whole number/);
});

test('settings validate and become a request', () => {
  const l = effectiveLimits(account, balanced);
  const s = { ...defaultSettings(), prompt: 'a red circle', size: '128x128', steps: '8', seed: '42', n: '2', guidance: '6.5' };
  assert.deepEqual(validateSettings(s, l, balanced), {});
  assert.deepEqual(buildRequest(s, balanced), { prompt: 'a red circle', width: 128, height: 128, steps: 8, guidance: 6.5, seed: 42, n: 2 });
  // Empty fields are left to the profile.
  assert.deepEqual(buildRequest({ ...defaultSettings(), prompt: 'x' }, balanced), { prompt: 'x' });
  assert.deepEqual(chosenSize({ size: 'default' }, balanced), [512, 512]);
  const bad = validateSettings({ ...s, prompt: ' ', steps: '61', seed: '-1', n: '0', guidance: 'abc', size: 'custom', width: '100', height: '64' }, l, balanced);
  assert.deepEqual(Object.keys(bad).sort(), ['guidance', 'n', 'prompt', 'seed', 'steps', 'width']);
  assert.match(bad.steps, /At most 60 steps/);
});

test('the default size is the model\'s native size, else the profile\'s', () => {
  const l = effectiveLimits(account, balanced);
  const shapes = { id: 'kiln-shapes', native_width: 128, native_height: 128, vae_factor: 8 };
  assert.deepEqual(defaultSize(shapes, balanced, l), { width: 128, height: 128, source: 'model' });
  // Unknown native size, or one over the limits: the profile's.
  assert.deepEqual(defaultSize({ id: 'x' }, balanced, l), { width: 512, height: 512, source: 'profile' });
  assert.deepEqual(defaultSize({ id: 'xl', native_width: 1024, native_height: 1024 }, balanced, l).source, 'profile');
  assert.equal(defaultSize(null, null, l), null);
  // The "default" choice sends no size, and is checked at the size the server will use.
  const d = defaultSize(shapes, balanced, l);
  assert.deepEqual(chosenSize({ size: 'default' }, d), [128, 128]);
  assert.deepEqual(buildRequest({ ...defaultSettings(), prompt: 'x' }, d), { prompt: 'x' });
  const tiny = effectiveLimits({ ...account, quota: { ...account.quota, max_pixels: 100 * 100 } }, balanced);
  assert.match(validateSettings({ ...defaultSettings(), prompt: 'x' }, tiny, defaultSize({ id: 'x' }, balanced, tiny)).width, /your limit/);
});

test('a job\'s parameters become settings again', () => {
  const s = settingsFromParams({ prompt: 'p', negative_prompt: 'n', model: 'm', profile: 'balanced', width: 200, height: 128,
    steps: 8, guidance: 7, sampler: 'euler_a', seed: 5, n: 1 }, 9);
  assert.equal(s.size, 'custom');
  assert.equal(s.width, '200');
  assert.equal(s.seed, '9');
  assert.equal(settingsFromParams({ width: 512, height: 768 }).size, '512x768');
});

test('progress, time left and queue words', () => {
  assert.equal(etaSeconds(2, 10, 4), 2);
  assert.equal(etaSeconds(2, 10, 0), null);
  assert.equal(progressText(3, 8, 2.5), 'Step 3 of 8 · 2.5 it/s · about 2.0 s left');
  assert.equal(progressText(8, 8, 12), 'Step 8 of 8 · 12 it/s · finishing');
  assert.equal(formatDuration(125), '2 min 5 s');
  assert.equal(formatDuration(3600 * 2 + 60), '2 h 1 min');
  assert.equal(queueText(0), 'Waiting in the queue — next in line');
  assert.equal(queueText(3), 'Waiting in the queue — 3 jobs ahead');
  // The server's position wins (it counts jobs a worker holds, which the
  // queue depth does not); without one the depth gives an estimate.
  assert.equal(jobsAhead(5, 2), 5);
  assert.equal(jobsAhead(0, 7), 0);
  assert.equal(jobsAhead(5, null), 5);
  assert.equal(jobsAhead(null, 3), 2);
  assert.equal(jobsAhead(undefined, 0), null);
  assert.equal(formatBytes(1.5 * 2 ** 30), '1.5 GiB');
});

test('failures and refusals in plain words', () => {
  const f = failureText({ code: 'model_unavailable', message: 'open unet: no such file' });
  assert.equal(f.summary, 'The model could not be loaded, so the job could not run.');
  assert.equal(f.detail, 'open unet: no such file');
  assert.equal(failureText(null).summary, 'The job failed.');
  assert.equal(submitErrorText({ code: 'limit_exceeded', field: 'steps', message: 'steps=200 exceeds the tenant limit max_steps=150' }),
    'Steps: Steps=200 exceeds the tenant limit max_steps=150.');
  assert.equal(submitErrorText({ code: 'rate_limited', message: 'too many images this minute', retryAfter: 12 }),
    'Slow down: Too many images this minute. Try again in 12 s.');
  assert.match(submitErrorText({ code: 'network', message: 'x' }), /could not be reached/);
  assert.ok(statusRank('succeeded') > statusRank('running') && statusRank('running') > statusRank('queued'));
});

// A PNG with text chunks, built byte by byte (CRCs included).
function crc32(bytes) {
  let c = ~0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}
function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, data.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(data, 8);
  dv.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}
function pngWith(chunks) {
  const parts = [new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', new Uint8Array(13)), ...chunks, chunk('IEND', new Uint8Array())];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out.buffer;
}
const latin1Bytes = (s) => Uint8Array.from(s, (ch) => ch.charCodeAt(0));

const a1111Text = 'a red circle, (blue:1.2) square\nNegative prompt: blurry\n' +
  'Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 1234, Size: 768x512, Model hash: 6ce0161689, ' +
  'Model: tiny, RNG: CPU, Lora hashes: "a: 0123, b: 4567", Version: v1.10.1';

test('PNG text chunks are read (tEXt and UTF-8 iTXt)', async () => {
  const { readPNGText } = await import('../js/pngparams.js');
  const itxt = new Uint8Array([...latin1Bytes('comment\0\0\0\0\0'), ...new TextEncoder().encode('ünïcødé 🐈')]);
  const texts = await readPNGText(pngWith([chunk('tEXt', latin1Bytes(`parameters\0${a1111Text}`)), chunk('iTXt', itxt)]));
  assert.equal(texts.parameters, a1111Text);
  assert.equal(texts.comment, 'ünïcødé 🐈');
  await assert.rejects(readPNGText(new Uint8Array([1, 2, 3]).buffer), /not a PNG/);
});

test('A1111 parameters become form settings', async () => {
  const { parseParameters, settingsFromParameters } = await import('../js/pngparams.js');
  const p = parseParameters(a1111Text);
  assert.equal(p.prompt, 'a red circle, (blue:1.2) square');
  assert.equal(p.negative_prompt, 'blurry');
  assert.equal(p.fields['Lora hashes'], 'a: 0123, b: 4567');
  const samplers = [{ id: 'dpmpp_2m', label: 'DPM++ 2M' }, { id: 'dpmpp_2m_karras', label: 'DPM++ 2M Karras' }];
  const { settings, skipped } = settingsFromParameters(p, { samplers, models: ['tiny'] });
  assert.deepEqual(settings, {
    prompt: 'a red circle, (blue:1.2) square', negative_prompt: 'blurry', steps: '20', guidance: '7.5', seed: '1234',
    width: '768', height: '512', size: '768x512', sampler: 'dpmpp_2m_karras', model: 'tiny', hires: '',
  });
  assert.deepEqual(skipped, []);
  const other = settingsFromParameters(parseParameters('x\nSteps: 4, Sampler: Restart, CFG scale: 3, Seed: 9, Model: sdxl-base'),
    { samplers, models: ['tiny'] });
  assert.deepEqual(other.skipped, ['sampler Restart', 'model sdxl-base']);
  // A prompt alone (no fields line) is all prompt.
  assert.deepEqual(parseParameters('just a prompt, with: a colon'), { prompt: 'just a prompt, with: a colon', negative_prompt: '', fields: {} });
});

test('the LoRA/embedding picker inserts prompt syntax at the caret', () => {
  assert.deepEqual(insertExtraNetwork('a cat', 5, 'lora', 'ink'), { text: 'a cat <lora:ink:1>', caret: 18 });
  assert.deepEqual(insertExtraNetwork('a cat', 1, 'embedding', 'badhands'), { text: 'a badhands cat', caret: 10 });
  assert.deepEqual(insertExtraNetwork('', undefined, 'lora', 'x'), { text: '<lora:x:1>', caret: 10 });
  assert.deepEqual(insertExtraNetwork('a ', 2, 'embedding', 'e'), { text: 'a e', caret: 3 });
});

test('SDXL models get their size buckets and native size; others the usual presets', () => {
  const sdxl = { family: 'sdxl', native_width: 1024, native_height: 1024 };
  assert.deepEqual(sizePresets(sdxl), SDXL_BUCKETS);
  assert.deepEqual(sizePresets({ family: 'sd', native_width: 512, native_height: 512 })[0], [128, 128]);
  assert.deepEqual(sizePresets({ family: 'sdxl', native_width: 512, native_height: 512 }).slice(0, 2), [[512, 512], [576, 448]]);
  const lim = effectiveLimits({ quota: { max_pixels: 4194304, max_steps: 150, max_n: 8 } }, null);
  assert.deepEqual(defaultSize(sdxl, balanced, lim), { width: 1024, height: 1024, source: 'model' });
});

test('hires fix and micro-conditioning settings validate and become request fields', () => {
  const lim = effectiveLimits(account, null);
  const s = { ...defaultSettings(), prompt: 'x', hires: '1', hires_scale: '1.5', hires_upscaler: 'lanczos', hires_steps: '6' };
  assert.deepEqual(hiresSize(s, 512, 512), [768, 768]);
  assert.deepEqual(hiresSize({ ...s, hires_height: '1024' }, 512, 256), [2048, 1024]);
  assert.deepEqual(validateSettings(s, lim, { width: 512, height: 512 }), {});
  assert.deepEqual(buildRequest(s, { width: 512, height: 512 }).hires, { upscaler: 'lanczos', scale: 1.5, steps: 6 });
  assert.deepEqual(buildRequest({ ...s, hires_width: '1024', hires_denoise: '0.3' }, null).hires,
    { upscaler: 'lanczos', width: 1024, height: 0, steps: 6, denoise: 0.3 });
  assert.match(validateSettings({ ...s, hires_scale: '8' }, lim, { width: 512, height: 512 }).hires, /at most 4/);
  assert.match(validateSettings({ ...s, hires_scale: '4' }, lim, { width: 512, height: 512 }).hires, /your limit/);
  assert.match(validateSettings({ ...s, hires_denoise: '0' }, lim, { width: 512, height: 512 }).hires, /denoising/);
  assert.match(validateSettings(s, lim, { width: 512, height: 512 }, { editing: true }).hires, /new images only/);
  assert.equal(buildRequest({ ...s, hires: '' }, null).hires, undefined);

  const m = { ...defaultSettings(), prompt: 'x', micro_original_width: '2048', micro_crop_top: '0' };
  assert.deepEqual(buildRequest(m, null, { family: 'sdxl' }).micro_conditioning, { original_width: 2048, crop_top: 0 });
  assert.equal(buildRequest(m, null, { family: 'sd' }).micro_conditioning, undefined);
  assert.match(validateSettings({ ...m, micro_crop_top: '99999' }, lim, null, { family: 'sdxl' }).micro_conditioning, /16384/);
  assert.deepEqual(validateSettings({ ...m, micro_crop_top: 'junk' }, lim, null, { family: 'sd' }), {});
  // A job's hires and micro-conditioning come back into the form.
  const back = settingsFromParams({ prompt: 'x', width: 64, height: 64, hires: { scale: 2, upscaler: 'latent', steps: 3 },
    micro_conditioning: { original_width: 128, crop_left: 8 } }, 5);
  assert.equal(back.hires, '1');
  assert.equal(back.hires_scale, '2');
  assert.equal(back.hires_steps, '3');
  assert.equal(back.micro_original_width, '128');
  assert.equal(back.micro_crop_left, '8');
  assert.equal(back.micro_target_width, '');
});

test('edit helpers: mask pixels, invert, outpaint canvas and request fields', () => {
  assert.equal(snap8(13), 16);
  assert.equal(snap8(-20), 0);
  assert.equal(snap8(99999), 4096);
  assert.deepEqual(outpaintSize(128, 96, { left: 32, top: 8 }), [160, 104]);
  const layer = new Uint8ClampedArray([9, 9, 9, 255, 0, 0, 0, 0, 1, 2, 3, 127, 0, 0, 0, 200]);
  const { pixels, white } = maskPixels(layer);
  assert.equal(white, 2);
  assert.deepEqual([...pixels], [255, 255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255, 255]);
  invertLayer(layer, [1, 2, 3]);
  assert.deepEqual([...layer].filter((_, i) => i % 4 === 3), [0, 255, 255, 0]);

  const base = { width: 128, height: 128, strength: '', maskBlur: '', fill: '', fullRes: false, padding: '', outpaint: {} };
  assert.match(editProblem({ ...base, mode: 'inpaint', maskWhite: 0 }).message, /Paint over/);
  assert.equal(editProblem({ ...base, mode: 'inpaint', maskWhite: 10 }), null);
  assert.equal(editProblem({ ...base, mode: 'img2img', strength: '1.5' }).field, 'strength');
  assert.match(editProblem({ ...base, mode: 'outpaint' }).message, /at least one side/);
  assert.match(editProblem({ ...base, mode: 'outpaint', outpaint: { left: '4' } }).message, /multiples of 8/);
  assert.equal(editProblem({ ...base, mode: 'outpaint', outpaint: { left: '16', bottom: '8' } }), null);

  const init = 'data:image/png;base64,AAAA';
  assert.deepEqual(editFields({ ...base, mode: 'img2img', strength: '0.6' }, { initImage: init }), { init_image: init, strength: 0.6 });
  assert.deepEqual(editFields({ ...base, mode: 'inpaint', maskBlur: '8', fill: 'latent_noise', fullRes: true, padding: '16' },
    { initImage: init, mask: 'data:m' }),
  { init_image: init, mask: 'data:m', mask_blur: 8, inpaint_fill: 'latent_noise', inpaint_full_res: true, inpaint_full_res_padding: 16 });
  assert.deepEqual(editFields({ ...base, mode: 'outpaint', outpaint: { left: '16', right: '', top: '0', bottom: '8' } }, { initImage: init }),
    { init_image: init, outpaint: { left: 16, bottom: 8 } });
});
