// Shared pieces of the browser tests: the servers under test (started by
// scripts/web-e2e.sh and named in the environment), Debian's headless
// Chromium driven through playwright-core, and waits on conditions.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { chromium } from 'playwright-core';

/** A required environment variable. */
export function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run the browser tests through scripts/web-e2e.sh`);
  return v;
}

/** Base URL of the keyless server (loopback, no tenants). */
export const openURL = () => env('KILN_URL');

// Generous: the CI machine has two cores shared by everything.
export const SLOW = Number(process.env.KILN_E2E_TIMEOUT_MS) || 120_000;

/**
 * Launches Chromium with a fresh profile directory; returns {context, page,
 * close}. Page errors and console errors are collected in `problems`.
 */
export async function launch({ viewport = { width: 1280, height: 800 }, colorScheme = 'light' } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-chromium-'));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport,
    colorScheme,
    timeout: SLOW,
  });
  context.setDefaultTimeout(SLOW);
  const page = context.pages()[0] ?? await context.newPage();
  const problems = [];
  const watch = (p) => {
    p.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    p.on('console', (m) => {
      // Resource errors (a refused key answers 401) are expected; script errors are not.
      if (m.type() === 'error' && !/Failed to load resource|WebSocket connection/.test(m.text())) {
        problems.push(`console error: ${m.text()}`);
      }
    });
  };
  watch(page);
  context.on('page', watch);
  return {
    context,
    page,
    problems,
    async close() {
      await context.close().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Opens the page and waits until it has loaded its data. */
export async function openPage(page, url) {
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('body[data-ready="true"]');
  await page.waitForSelector('#conn[data-state="open"]');
}

/**
 * Submits a prompt (the advanced panel open) and returns the new job's id.
 * The size defaults to the menu's "Model's" entry (the model's native size).
 */
export async function generate(page, prompt, { size = 'default', steps = '8', profile = '', model = '' } = {}) {
  const adv = page.locator('#advanced');
  if (!(await adv.evaluate((d) => d.open))) await page.click('#advanced summary');
  await page.selectOption('#model', model);
  await page.selectOption('#profile', profile);
  await page.selectOption('#size', size);
  await page.fill('#steps', steps);
  await page.fill('#prompt', prompt);
  const posted = page.waitForResponse((r) => r.url().endsWith('/v1/jobs') && r.request().method() === 'POST');
  await page.press('#prompt', 'Enter');
  const res = await posted;
  if (res.status() !== 202) throw new Error(`POST /v1/jobs answered ${res.status()}: ${await res.text()}`);
  const job = await res.json();
  await page.waitForSelector(`li.job[data-id="${job.id}"]`);
  return job.id;
}

/** The card of a job. */
export const card = (page, id) => page.locator(`li.job[data-id="${id}"]`);

/**
 * Starts recording, in the page, every value the progress bars take and
 * every preview frame that decodes (per job id).
 */
export async function recordProgress(page) {
  await page.evaluate(() => {
    const seen = { values: {}, previews: {} };
    window.__kilnSeen = seen;
    new MutationObserver((muts) => {
      for (const m of muts) {
        const el = m.target;
        if (el.matches?.('progress.job-progress') && el.hasAttribute('value')) {
          const id = el.closest('li.job').dataset.id;
          (seen.values[id] ??= []).push(Number(el.getAttribute('value')));
        }
      }
    }).observe(document.body, { subtree: true, attributes: true, attributeFilter: ['value'] });
    document.addEventListener('load', (e) => {
      const el = e.target;
      if (el.matches?.('.preview img') && el.naturalWidth > 0) {
        const id = el.closest('li.job').dataset.id;
        (seen.previews[id] ??= []).push({ w: el.naturalWidth, step: Number(el.dataset.step) });
      }
    }, true);
  });
}

/** What recordProgress saw for a job. */
export function seen(page, id) {
  return page.evaluate((jid) => ({
    values: window.__kilnSeen.values[jid] ?? [],
    previews: window.__kilnSeen.previews[jid] ?? [],
  }), id);
}

/** WCAG contrast ratio of two CSS rgb()/rgba() colours. */
export function contrast(a, b) {
  const lum = (c) => {
    const [r, g, bl] = c.match(/[\d.]+/g).slice(0, 3).map(Number).map((v) => {
      const s = v / 255;
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * bl;
  };
  const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05);
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

/** A PNG chunk of type (4 letters) and data (bytes). */
export function pngChunk(type, data) {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  Buffer.from(data).copy(out, 8);
  let c = 0xffffffff;
  for (const b of out.subarray(4, 8 + data.length)) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  out.writeUInt32BE((c ^ 0xffffffff) >>> 0, 8 + data.length);
  return out;
}

/**
 * An RGB PNG of w × h whose pixel (x, y) is rgb(x, y) → [r, g, b]; text
 * chunks {keyword: text} are written as tEXt.
 */
export function makePNG(w, h, rgb, text = {}) {
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const [r, g, b] = rgb(x, y);
      raw.set([r, g, b], y * (w * 3 + 1) + 1 + x * 3);
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), pngChunk('IHDR', ihdr),
    ...Object.entries(text).map(([k, v]) => pngChunk('tEXt', Buffer.from(`${k}\0${v}`, 'latin1'))),
    pngChunk('IDAT', deflateSync(raw)), pngChunk('IEND', Buffer.alloc(0))]);
}

/**
 * Decodes an image in the page (a URL, or a data: URL) into
 * {width, height, data: [r, g, b, a, …]}.
 */
export function pagePixels(page, url) {
  return page.evaluate(async (u) => {
    // Through an <img>: the page's policy lets images (not fetch) load data: URLs.
    const img = new Image();
    img.src = u;
    await img.decode();
    const bmp = await createImageBitmap(img);
    const c = new OffscreenCanvas(bmp.width, bmp.height);
    const g = c.getContext('2d');
    g.drawImage(bmp, 0, 0);
    return { width: bmp.width, height: bmp.height, data: [...g.getImageData(0, 0, bmp.width, bmp.height).data] };
  }, url);
}

/** Waits until a job is final on the server; returns it. */
export async function waitJob(page, base, id) {
  await page.waitForSelector(`li.job[data-id="${id}"][data-status="succeeded"], li.job[data-id="${id}"][data-status="failed"]`);
  return (await page.request.get(`${base}/v1/jobs/${id}`)).json();
}
