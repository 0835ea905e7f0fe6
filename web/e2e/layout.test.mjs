// Layout and accessibility: a 375-px phone and a desktop, light and dark,
// every control labelled, text contrast of at least 4.5:1, keyboard use.

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { launch, openPage, openURL, contrast } from './lib.mjs';

// Text on its background, as the page shows it.
const PAIRS = [
  ['body text', 'body', 'body'],
  ['labels', 'label[for="prompt"]', '.panel'],
  ['hints', '#prompt-hint', '.panel'],
  ['primary button', '#submit', '#submit'],
  ['header', '#who', '.top'],
  ['status numbers', '#queue-depth', '.stats div'],
  ['job details', '.job-params', '.job'],
];

async function colours(page) {
  return page.evaluate((pairs) => {
    const bg = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = getComputedStyle(e).backgroundColor;
        if (c && !/rgba\(.*, 0\)$/.test(c) && c !== 'transparent') return c;
      }
      return 'rgb(255, 255, 255)';
    };
    return pairs.map(([name, fg, back]) => {
      const f = document.querySelector(fg);
      const b = document.querySelector(back);
      return f && b ? { name, fg: getComputedStyle(f).color, bg: bg(b) } : { name, missing: true };
    });
  }, PAIRS);
}

for (const scheme of ['light', 'dark']) {
  for (const [label, viewport] of [['phone', { width: 375, height: 812 }], ['desktop', { width: 1280, height: 800 }]]) {
    describe(`${label}, ${scheme}`, { timeout: 3 * 60_000 }, () => {
      let b;
      after(async () => b?.close());

      test('fits, is labelled and readable', async () => {
        b = await launch({ viewport, colorScheme: scheme });
        const { page } = b;
        await openPage(page, openURL());
        await page.click('#advanced summary');

        // Nothing wider than the screen.
        const width = await page.evaluate(() => document.scrollingElement.scrollWidth);
        assert.ok(width <= viewport.width, `page is ${width}px wide in a ${viewport.width}px viewport`);
        for (const sel of ['#prompt', '#submit', '#seed', '#dice', '#size']) {
          const box = await page.locator(sel).boundingBox();
          assert.ok(box && box.x >= 0 && box.x + box.width <= viewport.width, `${sel} is outside the screen`);
        }

        // Every visible control has an accessible name.
        const unnamed = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea, button, a[href]')]
          .filter((el) => el.offsetParent !== null)
          .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')
            || el.textContent.trim()))
          .map((el) => el.outerHTML.slice(0, 80)));
        assert.deepEqual(unnamed, []);

        // Contrast.
        for (const c of await colours(page)) {
          if (c.missing) continue; // e.g. no job yet
          const r = contrast(c.fg, c.bg);
          assert.ok(r >= 4.5, `${c.name}: ${c.fg} on ${c.bg} has contrast ${r.toFixed(2)}`);
        }
        const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
        const lum = bg.match(/\d+/g).slice(0, 3).reduce((a, v) => a + Number(v), 0) / 3;
        assert.ok(scheme === 'dark' ? lum < 60 : lum > 200, `${scheme} background is ${bg}`);
        assert.deepEqual(b.problems, []);
      });
    });
  }
}

describe('keyboard', { timeout: 3 * 60_000 }, () => {
  let b;
  after(async () => b?.close());

  test('the skip link leads to the prompt, the dice and the advanced panel work by keyboard', async () => {
    b = await launch();
    const { page } = b;
    await openPage(page, openURL());
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to the prompt');
    await page.keyboard.press('Enter');
    await page.keyboard.press('Tab');
    // Focus moves on from the skip target into the form.
    const focused = await page.evaluate(() => document.activeElement.id || document.activeElement.tagName);
    assert.ok(['prompt', 'negative'].includes(focused), `focus went to ${focused}`);

    await page.focus('#advanced summary');
    const wasOpen = await page.locator('#advanced').evaluate((d) => d.open);
    await page.keyboard.press('Enter');
    assert.equal(await page.locator('#advanced').evaluate((d) => d.open), !wasOpen);
    if (wasOpen) await page.keyboard.press('Enter');
    await page.focus('#dice');
    await page.keyboard.press('Enter');
    assert.match(await page.inputValue('#seed'), /^\d+$/);

    // Shift+Enter adds a line; a bad value is reported next to its field.
    await page.fill('#prompt', 'one');
    await page.focus('#prompt');
    await page.keyboard.press('Shift+Enter');
    await page.keyboard.type('two');
    assert.equal(await page.inputValue('#prompt'), 'one\ntwo');
    await page.fill('#steps', '100000');
    await page.press('#prompt', 'Enter');
    await page.locator('#err-steps').getByText(/At most \d+ steps/).waitFor();
    assert.equal(await page.getAttribute('#steps', 'aria-invalid'), 'true');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'steps');
    await page.fill('#steps', '');
    assert.deepEqual(b.problems, []);
  });
});
