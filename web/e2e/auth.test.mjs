// A server with tenants: the page asks for an API key once, refuses a
// wrong one clearly, works with the right one (HTTP, images and the
// WebSocket) and keeps it for the tab across reloads.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { env, launch, openPage, generate, card } from './lib.mjs';

describe('API keys', { timeout: 5 * 60_000 }, () => {
  let b;
  let page;
  let url;
  let key;

  before(async () => {
    url = env('KILN_KEYED_URL');
    key = env('KILN_KEY');
    b = await launch();
    page = b.page;
  });

  after(async () => {
    await b?.close();
  });

  test('the server refuses keyless requests (the premise)', async () => {
    const res = await page.request.get(`${url}/v1/account`);
    assert.equal(res.status(), 401);
  });

  test('the page asks for a key and rejects a wrong one', async () => {
    await page.goto(url, { waitUntil: 'domcontentloaded' });
    const dialog = page.getByRole('dialog', { name: 'API key needed' });
    await dialog.waitFor();
    const input = dialog.getByLabel('API key');
    // Escape does not dismiss it: the page cannot work without a key.
    await page.keyboard.press('Escape');
    assert.ok(await dialog.isVisible());

    // A well-formed key that does not exist, then one that is malformed.
    const wrong = `kiln_${'0'.repeat(16)}_${'x'.repeat(40)}`;
    for (const k of [wrong, 'not-a-key']) {
      await input.fill(k);
      await dialog.getByRole('button', { name: 'Continue' }).click();
      const err = dialog.locator('#api-key-error');
      await err.getByText(/That key was not accepted: Invalid or revoked API key/).waitFor();
      assert.equal(await input.getAttribute('aria-invalid'), 'true');
      assert.ok(await dialog.isVisible());
      assert.equal(await page.evaluate(() => sessionStorage.getItem('kiln.apiKey')), null);
    }
  });

  test('the right key opens the page; jobs, images and live events work with it', async () => {
    const dialog = page.getByRole('dialog', { name: 'API key needed' });
    await dialog.getByLabel('API key').fill(key);
    await dialog.getByRole('button', { name: 'Continue' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await page.waitForSelector('body[data-ready="true"]');
    await page.waitForSelector('#conn[data-state="open"]'); // the WebSocket took the key
    assert.match(await page.textContent('#who'), /^Tenant e2e-tenant/);

    const id = await generate(page, 'a blue circle on a red background', { steps: '8' });
    await card(page, id).locator('.job-state').getByText(/^Done/).waitFor();
    await page.waitForFunction((jid) => {
      const img = document.querySelector(`li.job[data-id="${jid}"] .result img`);
      return img && img.complete && img.naturalWidth === 128;
    }, id);
  });

  test('the key is kept for the tab: a reload does not ask again', async () => {
    await page.reload({ waitUntil: 'domcontentloaded' });
    await openPage(page, page.url());
    assert.equal(await page.getByRole('dialog').count(), 0);
    assert.equal(await page.locator('li.job').count(), 1);
  });

  test('"Forget key" asks again', async () => {
    await page.getByRole('button', { name: 'Forget key' }).click();
    await page.getByRole('dialog', { name: 'API key needed' }).waitFor();
  });

  test('the page shows no script errors', () => {
    assert.deepEqual(b.problems, []);
  });
});
