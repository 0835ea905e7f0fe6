// Shared pieces of the browser tests: the servers under test (started by
// scripts/web-e2e.sh and named in the environment), Debian's headless
// Chromium driven through playwright-core, and waits on conditions.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
export const SLOW = 120_000;

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
