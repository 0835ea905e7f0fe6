// The main path in a real browser against a real `kiln serve`: a prompt
// becomes an image with live progress and previews, a running job is
// canceled, history and settings survive a reload, and a dropped
// connection is noticed, retried and resubscribed.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  launch, openPage, openURL, generate, card, recordProgress, seen, SLOW,
} from './lib.mjs';

const PNG = [137, 80, 78, 71, 13, 10, 26, 10];

describe('generate', { timeout: 10 * 60_000 }, () => {
  let b;
  let page;
  const jobs = {};

  before(async () => {
    b = await launch();
    await b.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: openURL() });
    page = b.page;
    await openPage(page, openURL());
  });

  after(async () => {
    await b?.close();
  });

  test('a prompt becomes an image: progress bar, preview frames, PNG in the gallery', async () => {
    await recordProgress(page);
    const imageResponse = page.waitForResponse((r) => /\/v1\/images\/[a-z0-9]+-0$/.test(r.url()), { timeout: SLOW });
    const posted = page.waitForRequest((r) => r.url().endsWith('/v1/jobs') && r.method() === 'POST');
    const id = await generate(page, 'a red circle on a blue background', { steps: '10' });
    // The size menu starts at the model's native size, and leaves the size to the server.
    assert.equal(await page.locator('#size option[value="default"]').textContent(), 'Model\'s (128 × 128)');
    assert.equal(await page.inputValue('#width'), '128');
    assert.equal(await page.inputValue('#height'), '128');
    const body = (await posted).postDataJSON();
    assert.equal(body.width, undefined, JSON.stringify(body));
    jobs.done = id;
    const c = card(page, id);
    await c.locator('.job-state').getByText(/^Done/).waitFor();
    await page.waitForFunction((jid) => {
      const img = document.querySelector(`li.job[data-id="${jid}"] .result img`);
      return img && img.complete && img.naturalWidth > 0;
    }, id);

    // The progress bar moved: several steps, in order, some before the last.
    const s = await seen(page, id);
    assert.ok(s.values.length >= 2, `progress values seen: ${JSON.stringify(s.values)}`);
    assert.ok(s.values.some((v) => v > 0 && v < 10), `no intermediate step in ${JSON.stringify(s.values)}`);
    for (let i = 1; i < s.values.length; i++) assert.ok(s.values[i] >= s.values[i - 1], `progress went back: ${s.values}`);
    // At least one latent preview decoded in place.
    assert.ok(s.previews.length >= 1, 'no preview frame was shown');
    assert.ok(s.previews[0].w > 0 && s.previews[0].step >= 1);

    // The final image is a 128×128 PNG, served as one and shown as one.
    const res = await imageResponse;
    assert.ok(res.url().endsWith(`/v1/images/${id}-0`), res.url()); // the data directory starts empty
    assert.equal(res.status(), 200);
    assert.equal(res.headers()['content-type'], 'image/png');
    const img = c.locator('.result img');
    const info = await img.evaluate((el) => ({ w: el.naturalWidth, h: el.naturalHeight, alt: el.alt, id: el.dataset.imageId }));
    const png = await (await page.request.get(`${openURL()}/v1/images/${info.id}`)).body();
    assert.deepEqual([...png.subarray(0, 8)], PNG);
    assert.equal(info.w, 128);
    assert.equal(info.h, 128);
    assert.match(info.alt, /red circle/);

    // Its settings are shown; the download link is a PNG file.
    const params = await c.locator('.job-params').textContent();
    assert.ok(params.startsWith(`${process.env.KILN_MODEL_NAME ?? 'kiln-shapes'} · 128 × 128 · 10 steps`), params);
    const dl = c.getByRole('link', { name: 'Download' });
    assert.match(await dl.getAttribute('download'), /\.png$/);
    assert.match(await dl.getAttribute('href'), /^blob:/);
    const download = page.waitForEvent('download');
    await dl.click();
    const file = await download;
    assert.match(file.suggestedFilename(), /^kiln-.*\.png$/);

    // Copy seed puts the job's seed on the clipboard.
    const seed = (await c.locator('.seed').textContent()).replace(/\D/g, '');
    await c.getByRole('button', { name: /Copy seed/ }).click();
    await page.waitForFunction((want) => navigator.clipboard.readText().then((t) => t === want), seed);
  });

  test('"use these settings again" fills the form from a job', async () => {
    const c = card(page, jobs.done);
    const seed = (await c.locator('.seed').textContent()).replace(/\D/g, '');
    await page.fill('#prompt', 'something else');
    await page.fill('#steps', '30');
    await c.getByRole('button', { name: 'Use these settings again' }).click();
    assert.equal(await page.inputValue('#prompt'), 'a red circle on a blue background');
    assert.equal(await page.inputValue('#steps'), '10');
    assert.equal(await page.inputValue('#size'), '128x128');
    assert.equal(await page.inputValue('#seed'), seed);
    assert.equal(await page.evaluate(() => document.activeElement.id), 'prompt');
  });

  test('a PNG\'s generation parameters import into the form', async () => {
    const res = await page.request.get(new URL(`/v1/images/${jobs.done}-0`, openURL()).href);
    assert.equal(res.status(), 200);
    const seed = (await card(page, jobs.done).locator('.seed').textContent()).replace(/\D/g, '');
    await page.fill('#prompt', 'something else');
    await page.fill('#steps', '30');
    await page.setInputFiles('#import-file', { name: 'kiln.png', mimeType: 'image/png', buffer: await res.body() });
    await page.locator('#import-note').getByText(/Settings imported from kiln\.png/).waitFor();
    assert.equal(await page.inputValue('#prompt'), 'a red circle on a blue background');
    assert.equal(await page.inputValue('#steps'), '10');
    assert.equal(await page.inputValue('#seed'), seed);
  });

  test('a failed job says why in plain words', async () => {
    // e2e-broken is a copy of the model with a cut-off UNet file.
    const id = await generate(page, 'a red circle on a blue background', { model: 'e2e-broken' });
    const c = card(page, id);
    await page.waitForSelector(`li.job[data-id="${id}"][data-status="failed"]`);
    assert.equal(await c.locator('.job-state').textContent(), 'Failed');
    const err = c.locator('.job-error');
    assert.equal(await err.locator('strong').textContent(), 'The model could not be loaded, so the job could not run.');
    const details = err.locator('details');
    assert.equal(await details.evaluate((d) => d.open), false); // the server's words are one click away
    await details.locator('summary').click();
    assert.match(await details.locator('p').textContent(), /^loading model e2e-broken: .*safetensors/);
    assert.equal(await c.locator('.result img').count(), 0);
    await c.getByRole('button', { name: 'Use these settings again' }).click();
    assert.equal(await page.inputValue('#model'), 'e2e-broken');
  });

  test('a running job is canceled from its card', async () => {
    const id = await generate(page, 'a green square on a yellow background', { steps: '60' });
    jobs.canceled = id;
    const c = card(page, id);
    // Wait until it is running (a step done), then cancel it.
    await page.waitForFunction((jid) => (window.__kilnSeen.values[jid] ?? []).some((v) => v >= 1), id);
    await c.getByRole('button', { name: /^Cancel job/ }).click();
    await page.waitForSelector(`li.job[data-id="${id}"][data-status="canceled"]`);
    assert.equal(await c.locator('.job-state').textContent(), 'Canceled');
    const s = await seen(page, id);
    assert.ok(Math.max(...s.values) < 60, `the sampler ran to the end: ${s.values}`);
    assert.equal(await c.getByRole('button', { name: /^Cancel job/ }).count(), 0);
    const server = await (await page.request.get(`${openURL()}/v1/jobs/${id}`)).json();
    assert.equal(server.status, 'canceled');
  });

  test('a job waiting in the queue shows its position and cancels at once', async () => {
    // A long job holds the only worker; the next ones wait behind it. They
    // have another size, so they cannot join its running batch at a step
    // boundary (continuous batching joins jobs of one model and size).
    const long = await generate(page, 'a blue triangle on a white background', { steps: '150', profile: 'quality_first' });
    await page.waitForFunction((jid) => (window.__kilnSeen.values[jid] ?? []).some((v) => v >= 1), long);
    const waiting = await generate(page, 'a white circle on a red background', { steps: '8', size: '256x256' });
    const behind = await generate(page, 'a black square on a green background', { steps: '8', size: '256x256' });
    const c = card(page, waiting);
    const b2 = card(page, behind);
    await c.locator('.job-state').getByText('Waiting in the queue — next in line').waitFor();
    await b2.locator('.job-state').getByText('Waiting in the queue — 1 job ahead').waitFor();
    await c.getByRole('button', { name: /^Cancel job/ }).click();
    await page.waitForSelector(`li.job[data-id="${waiting}"][data-status="canceled"]`);
    assert.equal(await c.locator('.job-state').textContent(), 'Canceled before it started');
    // The job behind moves up: its position is read again from the server.
    await b2.locator('.job-state').getByText('Waiting in the queue — next in line').waitFor();
    for (const id of [behind, long]) {
      await card(page, id).getByRole('button', { name: /^Cancel job/ }).click();
      await page.waitForSelector(`li.job[data-id="${id}"][data-status="canceled"]`);
    }
  });

  test('after a reload the history and the settings are still there', async () => {
    await page.fill('#prompt', 'a yellow star on a black background');
    await page.fill('#negative', 'blurry');
    await page.fill('#guidance', '6.5');
    await page.selectOption('#size', '256x256');
    await page.click('#dice');
    const seed = await page.inputValue('#seed');
    assert.match(seed, /^\d+$/);
    await page.reload({ waitUntil: 'domcontentloaded' });
    await page.waitForSelector('body[data-ready="true"]');

    assert.equal(await page.inputValue('#prompt'), 'a yellow star on a black background');
    assert.equal(await page.inputValue('#negative'), 'blurry');
    assert.equal(await page.inputValue('#guidance'), '6.5');
    assert.equal(await page.inputValue('#size'), '256x256');
    assert.equal(await page.inputValue('#seed'), seed);
    assert.ok(await page.locator('#advanced').evaluate((d) => d.open), 'the advanced panel was closed');

    await page.waitForSelector(`li.job[data-id="${jobs.done}"][data-status="succeeded"]`);
    await page.waitForFunction((jid) => {
      const img = document.querySelector(`li.job[data-id="${jid}"] .result img`);
      return img && img.complete && img.naturalWidth === 128;
    }, jobs.done);
    await page.waitForSelector(`li.job[data-id="${jobs.canceled}"][data-status="canceled"]`);
    // Newest first.
    const ids = await page.locator('li.job').evaluateAll((els) => els.map((e) => e.dataset.id));
    assert.ok(ids.indexOf(jobs.canceled) < ids.indexOf(jobs.done));
  });

  test('older jobs come page by page, and the list filters by status', async () => {
    // Thirteen more jobs, each canceled at once (no image work needed).
    for (let i = 0; i < 13; i++) {
      const res = await page.request.post(`${openURL()}/v1/jobs`, {
        data: { prompt: `history ${i}`, width: 64, height: 64, steps: 8 },
      });
      assert.equal(res.status(), 202, await res.text());
      const { id } = await res.json();
      const del = await page.request.delete(`${openURL()}/v1/jobs/${id}`);
      assert.ok([200, 202, 409].includes(del.status()), `cancel answered ${del.status()}`);
    }
    const total = (async () => {
      let n = 0;
      let cursor = '';
      do {
        const q = cursor ? `&cursor=${cursor}` : '';
        const pageOf = await (await page.request.get(`${openURL()}/v1/jobs?limit=100${q}`)).json();
        n += pageOf.jobs.length;
        cursor = pageOf.next_cursor ?? '';
      } while (cursor);
      return n;
    })();
    await page.reload({ waitUntil: 'domcontentloaded' });
    await page.waitForSelector('body[data-ready="true"]');
    const all = await total;
    assert.ok(all > 12, `only ${all} jobs`);
    assert.equal(await page.locator('li.job').count(), 12);
    const more = page.getByRole('button', { name: 'Show older jobs' });
    while (await more.isVisible()) {
      const before = await page.locator('li.job').count();
      await more.click();
      await page.waitForFunction((n) => document.querySelectorAll('li.job').length > n, before);
    }
    assert.equal(await page.locator('li.job').count(), all);
    await page.waitForSelector(`li.job[data-id="${jobs.done}"][data-status="succeeded"]`);

    await page.selectOption('#filter', 'succeeded');
    await page.waitForFunction(() => {
      const els = [...document.querySelectorAll('li.job')];
      return els.length > 0 && els.every((e) => e.dataset.status === 'succeeded');
    });
    assert.ok(await page.locator(`li.job[data-id="${jobs.done}"]`).isVisible());
    await page.selectOption('#filter', '');
    await page.waitForFunction(() => document.querySelectorAll('li.job[data-status="canceled"]').length > 0);
  });

  test('a dropped connection shows a banner, reconnects by itself and resubscribes', async () => {
    const p = await b.context.newPage();
    let blocked = false;
    const sockets = [];
    await p.routeWebSocket(/\/v1\/ws/, (ws) => {
      if (blocked) {
        ws.close({ code: 1012, reason: 'test: server unreachable' });
        return;
      }
      ws.connectToServer();
      sockets.push(ws);
    });
    await openPage(p, openURL());
    await recordProgress(p);
    const id = await generate(p, 'a red square on a green background', { steps: '20' });
    await p.waitForFunction((jid) => (window.__kilnSeen.values[jid] ?? []).length >= 1, id);

    // Cut the connection and keep the server out of reach.
    blocked = true;
    sockets.at(-1).close({ code: 1012, reason: 'test: connection dropped' });
    await p.locator('#banner').getByText(/Connection to the server lost/).waitFor();
    assert.equal(await p.getAttribute('#conn', 'data-state'), 'down');

    // The job finishes while the page cannot hear about it.
    for (;;) {
      const j = await (await p.request.get(`${openURL()}/v1/jobs/${id}`)).json();
      if (j.status === 'succeeded') break;
      assert.ok(j.status === 'running' || j.status === 'queued', `job ${j.status}`);
      await p.waitForTimeout(250); // polling interval, not an assertion
    }
    assert.equal(await card(p, id).getAttribute('data-status'), 'running');

    // Let it back in: the page reconnects by itself, resubscribes and catches up.
    blocked = false;
    await p.waitForSelector('#conn[data-state="open"]');
    await p.locator('#banner').waitFor({ state: 'hidden' });
    await p.waitForSelector(`li.job[data-id="${id}"][data-status="succeeded"]`);
    await p.waitForFunction((jid) => {
      const img = document.querySelector(`li.job[data-id="${jid}"] .result img`);
      return img && img.complete && img.naturalWidth > 0;
    }, id);
    assert.ok(sockets.length >= 2, 'no new WebSocket was opened');
    await p.close();
  });

  test('GPU readings in metrics events become numbers and a live chart', async () => {
    const p = await b.context.newPage();
    let page2server;
    await p.routeWebSocket(/\/v1\/ws/, (ws) => {
      const server = ws.connectToServer();
      // This machine has no GPU: hold back the server's own metrics events
      // and play those of a GPU server instead; everything else passes.
      server.onMessage((m) => {
        if (typeof m !== 'string' || !m.includes('"type":"metrics"')) ws.send(m);
      });
      page2server = ws;
    });
    await openPage(p, openURL());
    await p.locator('#gpus').getByText('CPU', { exact: true }).waitFor(); // from GET /v1/status
    const GiB = 2 ** 30;
    for (let i = 0; i < 5; i++) {
      page2server.send(JSON.stringify({
        type: 'metrics', time: new Date().toISOString(), queue_depth: 3, running: 1,
        workers: [{ id: 'w1', device: 'cuda', busy: true }],
        gpus: [{ index: 0, name: 'NVIDIA H100 80GB HBM3', memory_used: (20 + i) * GiB, memory_total: 80 * GiB,
          utilization: 0.5 + i / 10, temperature_c: 60 + i, power_w: 300 }],
      }));
    }
    const gpu = p.locator('#gpus .gpu');
    await gpu.getByRole('heading', { name: 'GPU 0: NVIDIA H100 80GB HBM3' }).waitFor();
    await p.waitForFunction(() => document.querySelector('#gpus .line.util')?.getAttribute('points').split(' ').length === 5);
    const values = await gpu.locator('dd').allTextContents();
    assert.deepEqual(values, ['90%', '24.0 GiB of 80.0 GiB', '64 °C', '300 W']);
    assert.equal(await p.textContent('#queue-depth'), '3');
    assert.equal(await p.textContent('#workers'), '1 (1 busy) on CUDA');
    assert.equal(await p.locator('#gpus').getByText('CPU', { exact: true }).count(), 0);
    assert.match(await gpu.getByRole('img').getAttribute('aria-label'), /utilisation 90%, memory 30% used, 64 °C/);
    // The utilisation line rises with the readings (y grows downwards).
    const ys = (await gpu.locator('.line.util').getAttribute('points')).split(' ').map((pt) => Number(pt.split(',')[1]));
    for (let i = 1; i < ys.length; i++) assert.ok(ys[i] < ys[i - 1], `utilisation line ${ys}`);
    await p.close();
  });

  // With KILN_SCREENSHOT=path, leaves a picture of the page after finished
  // jobs there (docs/screenshot.png).
  test('screenshot of the page after finished jobs', { skip: !process.env.KILN_SCREENSHOT && 'KILN_SCREENSHOT is not set' }, async () => {
    const prompts = ['a green square on a white background', 'a yellow star on a black background',
      'a red circle on a blue background'];
    const ids = [];
    await page.fill('#negative', '');
    await page.fill('#seed', '');
    await page.selectOption('#model', '');
    for (const prompt of prompts) ids.push(await generate(page, prompt, { steps: '20' }));
    for (const id of ids) {
      await page.waitForFunction((jid) => {
        const img = document.querySelector(`li.job[data-id="${jid}"] .result img`);
        return img && img.complete && img.naturalWidth > 0;
      }, id);
    }
    await page.fill('#prompt', 'a blue triangle on a yellow background');
    await page.evaluate(() => {
      document.activeElement?.blur();
      window.scrollTo(0, 0);
    });
    await page.locator('#toast').waitFor({ state: 'hidden' });
    await page.screenshot({ path: process.env.KILN_SCREENSHOT });
  });

  test('the page shows no script errors', () => {
    assert.deepEqual(b.problems, []);
  });
});
