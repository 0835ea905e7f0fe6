// Editing in a real browser against a real `kiln serve`: an uploaded or
// dropped init image, a mask painted on it (brush, erase, invert, clear)
// that the server takes and inpaints inside only, "send to inpaint" from a
// finished image, outpainting by number boxes and by handles, the hires
// fix's request, settings imported from an A1111 PNG, and the SDXL-only
// settings (size buckets, micro-conditioning) with the tiny SDXL model.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  launch, openPage, openURL, generate, card, makePNG, pagePixels, waitJob,
} from './lib.mjs';

const W = 128;
// A gradient init image: every pixel differs from its neighbours, so a
// repainted pixel is told from a kept one.
const initRGB = (x, y) => [x * 2, y * 2, 128];
const initPNG = makePNG(W, W, initRGB);

/** The request body of the next POST /v1/jobs and the job it created. */
async function submitAndCapture(page) {
  const posted = page.waitForRequest((r) => r.url().endsWith('/v1/jobs') && r.method() === 'POST');
  const answered = page.waitForResponse((r) => r.url().endsWith('/v1/jobs') && r.request().method() === 'POST');
  await page.click('#submit');
  const body = (await posted).postDataJSON();
  const res = await answered;
  return { body, status: res.status(), job: await res.json() };
}

/** Drags the mouse over the mask canvas from (x0, y0) to (x1, y1) in image pixels. */
async function paint(page, [x0, y0], [x1, y1]) {
  await page.locator('#edit-mask').scrollIntoViewIfNeeded();
  const box = await page.locator('#edit-mask').boundingBox();
  const at = (x, y) => [box.x + (x / W) * box.width, box.y + (y / W) * box.height];
  await page.mouse.move(...at(x0, y0));
  await page.mouse.down();
  await page.mouse.move(...at(x1, y1), { steps: 8 });
  await page.mouse.up();
}

/** Sets a range input as a user would (an input event). */
function setRange(page, sel, v) {
  return page.locator(sel).evaluate((el, value) => {
    el.value = String(value);
    el.dispatchEvent(new Event('input', { bubbles: true }));
  }, v);
}

const maskPixels = (page) => page.locator('#edit').evaluate((e) => Number(e.dataset.maskPixels));

async function uploadInit(page, name = 'init.png', buffer = initPNG) {
  await page.setInputFiles('#edit-file', { name, mimeType: 'image/png', buffer });
  await page.locator('#edit-panel').waitFor();
  await page.waitForFunction(() => document.querySelector('#edit-image').naturalWidth > 0);
}

/** Removes the image to edit, if there is one (a failed test leaves none behind). */
async function removeImage(page) {
  if (await page.locator('#edit-remove').isVisible()) await page.click('#edit-remove');
}

describe('edit', { timeout: 10 * 60_000 }, () => {
  let b;
  let page;

  before(async () => {
    b = await launch();
    page = b.page;
    await openPage(page, openURL());
    await page.fill('#prompt', 'a red circle on a blue background');
    await page.click('#advanced summary');
    await page.fill('#steps', '6');
  });

  after(async () => {
    await b?.close();
  });

  test('a painted mask is sent as a PNG the server takes; only the masked part is repainted', async () => {
    await uploadInit(page);
    await page.selectOption('#edit-mode', 'inpaint');
    // The size follows the image.
    assert.equal(await page.locator('#size option[value="default"]').textContent(), 'Image\'s (128 × 128)');

    // Brush, erase, invert, clear.
    await setRange(page, '#brush', 16);
    await paint(page, [40, 40], [88, 40]);
    const first = await maskPixels(page);
    assert.ok(first > 48 * 12 && first < 70 * 18, `one stroke painted ${first} pixels`);
    await page.click('#tool-erase');
    assert.equal(await page.getAttribute('#tool-erase', 'aria-pressed'), 'true');
    await paint(page, [64, 30], [64, 50]);
    const erased = await maskPixels(page);
    assert.ok(erased < first && erased > first / 2, `erasing left ${erased} of ${first}`);
    await page.click('#mask-invert');
    assert.equal(await maskPixels(page), W * W - erased);
    await page.click('#mask-invert');
    assert.equal(await maskPixels(page), erased);
    await page.click('#mask-clear');
    assert.equal(await maskPixels(page), 0);

    // Nothing painted: the page says so and sends nothing.
    let sent = 0;
    const count = (r) => { if (r.url().endsWith('/v1/jobs') && r.method() === 'POST') sent++; };
    page.on('request', count);
    await page.click('#submit');
    await page.locator('#err-edit').getByText(/Paint over the part of the image/).waitFor();
    page.off('request', count);
    assert.equal(sent, 0);

    // A band across the middle: y 52…76, x 24…104 (brush 24, round caps).
    await page.click('#tool-paint');
    await setRange(page, '#brush', 24);
    await paint(page, [36, 64], [92, 64]);
    const { body, status, job } = await submitAndCapture(page);
    assert.equal(status, 202, JSON.stringify(job));
    assert.match(body.init_image, /^data:image\/png;base64,/);
    assert.match(body.mask, /^data:image\/png;base64,/);
    assert.equal(body.width, undefined);
    assert.equal(body.outpaint, undefined);
    assert.equal(job.params.init_image, true);
    assert.equal(job.params.width, W);

    // The mask: black and white only, white under the stroke.
    const mask = await pagePixels(page, body.mask);
    assert.deepEqual([mask.width, mask.height], [W, W]);
    const m = (x, y) => mask.data[(y * W + x) * 4];
    assert.ok(mask.data.every((v, i) => (i % 4 === 3 ? v === 255 : v === 0 || v === 255)), 'the mask is not black and white');
    for (const [x, y] of [[40, 64], [64, 64], [90, 60], [64, 72]]) assert.equal(m(x, y), 255, `(${x}, ${y}) not masked`);
    for (const [x, y] of [[0, 0], [127, 127], [64, 20], [64, 100], [5, 64], [122, 64]]) assert.equal(m(x, y), 0, `(${x}, ${y}) masked`);

    // The job runs; the result keeps the pixels far from the mask and
    // repaints under it.
    const done = await waitJob(page, openURL(), job.id);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    const out = await pagePixels(page, `${openURL()}${done.images[0].url}`);
    assert.deepEqual([out.width, out.height], [W, W]);
    const px = (x, y) => out.data.slice((y * W + x) * 4, (y * W + x) * 4 + 3);
    let kept = 0;
    let total = 0;
    let changed = 0;
    for (let y = 0; y < W; y++) {
      for (let x = 0; x < W; x++) {
        const same = px(x, y).every((v, i) => v === initRGB(x, y)[i]);
        if (y < 32 || y > 96) {
          total++;
          if (same) kept++;
        } else if (y >= 58 && y <= 70 && x >= 40 && x <= 88 && !same) {
          changed++;
        }
      }
    }
    assert.equal(kept, total, `${total - kept} pixels far from the mask changed`);
    assert.ok(changed > 300, `only ${changed} pixels under the mask changed`);
    assert.match(await card(page, job.id).locator('.job-params').textContent(), /inpaint/);
  });

  test('a dropped image becomes the init image (img2img)', async () => {
    await page.click('#edit-remove');
    await page.locator('#edit-panel').waitFor({ state: 'hidden' });
    assert.equal(await page.locator('#size option[value="default"]').textContent(), 'Model\'s (128 × 128)');
    const small = makePNG(96, 64, (x, y) => [x, y, 200]);
    await page.locator('#edit').evaluate((el, bytes) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(bytes)], 'dropped.png', { type: 'image/png' }));
      el.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
      el.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }, [...small]);
    await page.locator('#edit-panel').waitFor();
    await page.waitForFunction(() => document.querySelector('#edit-image').naturalWidth === 96);
    // Dropped on the image panel it is not a settings import.
    assert.equal(await page.locator('#import-note').isVisible(), false);
    await page.selectOption('#edit-mode', 'img2img');
    assert.equal(await page.locator('#size option[value="default"]').textContent(), 'Image\'s (96 × 64)');
    await page.fill('#strength', '0.5');
    const { body, status, job } = await submitAndCapture(page);
    assert.equal(status, 202, JSON.stringify(job));
    assert.equal(body.strength, 0.5);
    assert.equal(body.mask, undefined);
    const done = await waitJob(page, openURL(), job.id);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.deepEqual([done.images[0].width, done.images[0].height], [96, 64]);
    assert.match(await card(page, job.id).locator('.job-params').textContent(), /img2img 0\.5/);
    await page.fill('#strength', '');
  });

  test('outpainting: sides from the number boxes and the handles; the server sizes the canvas', async () => {
    await removeImage(page);
    await uploadInit(page);
    await page.selectOption('#edit-mode', 'outpaint');
    await page.fill('#outpaint-left', '32');
    // The right handle dragged outwards by about 24 image pixels.
    await page.locator('#edit-frame').scrollIntoViewIfNeeded();
    const img = await page.locator('#edit-imagebox').boundingBox();
    const handle = await page.locator('#handle-right').boundingBox();
    const perPixel = img.width / W;
    await page.mouse.move(handle.x + handle.width / 2, handle.y + handle.height / 2);
    await page.mouse.down();
    await page.mouse.move(handle.x + handle.width / 2 + 24 * perPixel, handle.y + handle.height / 2, { steps: 6 });
    await page.mouse.up();
    assert.equal(await page.inputValue('#outpaint-right'), '24');
    // The top handle by keyboard: one arrow press is 8 pixels.
    await page.focus('#handle-top');
    await page.keyboard.press('ArrowUp');
    assert.equal(await page.inputValue('#outpaint-top'), '8');
    assert.equal(await page.locator('#size option[value="default"]').textContent(), 'Outpainted canvas (184 × 136)');
    assert.ok(await page.locator('#size').isDisabled());
    assert.match(await page.textContent('#edit-info'), /canvas becomes 184 × 136/);
    // The frame has the canvas's shape.
    const frame = await page.locator('#edit-frame').boundingBox();
    assert.ok(Math.abs(frame.width / frame.height - 184 / 136) < 0.02, `frame ${frame.width}×${frame.height}`);

    // A side that leaves the canvas off the 8-pixel grid is refused here.
    await page.fill('#outpaint-bottom', '4');
    await page.click('#submit');
    await page.locator('#err-edit').getByText(/multiples of 8/).waitFor();
    await page.fill('#outpaint-bottom', '');

    const { body, status, job } = await submitAndCapture(page);
    assert.equal(status, 202, JSON.stringify(job));
    assert.deepEqual(body.outpaint, { left: 32, right: 24, top: 8 });
    assert.equal(body.width, undefined);
    assert.equal(body.height, undefined);
    assert.equal(body.mask, undefined);
    assert.match(body.init_image, /^data:image\/png;base64,/);
    const done = await waitJob(page, openURL(), job.id);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.deepEqual([done.images[0].width, done.images[0].height], [184, 136]);
    assert.match(await card(page, job.id).locator('.job-params').textContent(), /outpaint ←32 →24 ↑8/);
    await page.click('#edit-remove');
    assert.ok(!(await page.locator('#size').isDisabled()));
  });

  test('"Send to inpaint" puts a finished image and its settings into the form', async () => {
    await removeImage(page);
    const id = await generate(page, 'a green square on a white background', { steps: '6' });
    const c = card(page, id);
    await page.waitForSelector(`li.job[data-id="${id}"][data-status="succeeded"]`);
    await page.fill('#prompt', 'something else');
    const send = c.getByRole('button', { name: /Send image with seed \d+ to inpaint/ });
    await send.click();
    await page.locator('#edit-panel').waitFor();
    await page.waitForFunction(() => document.querySelector('#edit-image').naturalWidth === 128);
    assert.equal(await page.inputValue('#edit-mode'), 'inpaint');
    assert.equal(await page.inputValue('#prompt'), 'a green square on a white background');
    assert.ok(await page.locator('#edit-mask').isVisible());
    // The image sent is the job's image, pixel for pixel.
    const sentPixels = await page.evaluate(() => {
      const img = document.querySelector('#edit-image');
      const c = new OffscreenCanvas(img.naturalWidth, img.naturalHeight);
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0);
      return [...g.getImageData(0, 0, c.width, c.height).data];
    });
    const original = await pagePixels(page, `${openURL()}/v1/images/${id}-0`);
    assert.deepEqual(sentPixels, original.data);

    await paint(page, [20, 20], [100, 100]);
    const { body, status, job } = await submitAndCapture(page);
    assert.equal(status, 202, JSON.stringify(job));
    assert.ok(body.mask && body.init_image);
    const done = await waitJob(page, openURL(), job.id);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    await page.click('#edit-remove');
  });

  test('the hires fix sends its fields (and refuses an init image)', async () => {
    await removeImage(page);
    const served = JSON.stringify(await (await page.request.get(`${openURL()}/v1/openapi.json`)).json()).includes('"hires"');
    await page.locator('#hires-fields').waitFor({ state: 'hidden' });
    await page.check('#hires');
    await page.locator('#hires-fields').waitFor();
    await page.selectOption('#size', 'default');
    await page.fill('#hires-scale', '2');
    await page.selectOption('#hires-upscaler', 'lanczos');
    await page.fill('#hires-steps', '4');
    await page.fill('#hires-denoise', '0.4');
    assert.equal(await page.textContent('#hires-size'), 'First pass 128 × 128, then 256 × 256.');
    if (!served) {
      // This server has no hires fix yet: check the body, send nothing.
      await page.route('**/v1/jobs', (r) => (r.request().method() === 'POST'
        ? r.fulfill({ status: 400, contentType: 'application/json', body: '{"error":{"code":"invalid_request","message":"test: not sent","field":"hires"}}' })
        : r.continue()));
    }
    const { body, status, job } = await submitAndCapture(page);
    assert.deepEqual(body.hires, { upscaler: 'lanczos', scale: 2, steps: 4, denoise: 0.4 });
    assert.equal(body.width, undefined); // the model's size
    if (served) {
      assert.equal(status, 202, JSON.stringify(job));
      const done = await waitJob(page, openURL(), job.id);
      assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
      assert.deepEqual([done.images[0].width, done.images[0].height], [256, 256]);
      assert.match(await card(page, job.id).locator('.job-params').textContent(), /hires ×2 lanczos/);
    } else {
      await page.locator('#err-hires').getByText(/not sent/).waitFor();
      await page.unroute('**/v1/jobs');
    }
    // A size instead of a scale; one side left out keeps the aspect ratio.
    await page.fill('#hires-width', '384');
    assert.equal(await page.textContent('#hires-size'), 'First pass 128 × 128, then 384 × 384.');
    await page.route('**/v1/jobs', (r) => (r.request().method() === 'POST'
      ? r.fulfill({ status: 400, contentType: 'application/json', body: '{"error":{"code":"invalid_request","message":"test: not sent"}}' })
      : r.continue()));
    const sized = await submitAndCapture(page);
    assert.deepEqual(sized.body.hires, { upscaler: 'lanczos', width: 384, height: 0, steps: 4, denoise: 0.4 });
    await page.unroute('**/v1/jobs');
    await page.fill('#hires-width', '');
    // With an image to edit the page refuses the hires fix itself.
    await uploadInit(page);
    await page.click('#submit');
    await page.locator('#err-hires').getByText(/hires fix makes new images only/).waitFor();
    await page.click('#edit-remove');
    await page.uncheck('#hires');
    await page.selectOption('#size', 'default');
  });

  test('settings import from an A1111 PNG, hires fix included', async () => {
    await removeImage(page);
    const text = 'a lighthouse at dusk\nNegative prompt: fog\nSteps: 12, Sampler: Euler, Schedule type: Automatic, CFG scale: 5.5, ' +
      'Seed: 4242, Size: 64x64, Model: e2e-sdxl, Denoising strength: 0.35, Hires upscale: 1.5, Hires steps: 3, ' +
      'Hires upscaler: Latent (bicubic), Version: v1.10.1';
    const png = makePNG(8, 8, () => [0, 0, 0], { parameters: text });
    await page.setInputFiles('#import-file', { name: 'a1111.png', mimeType: 'image/png', buffer: png });
    await page.locator('#import-note').getByText(/Settings imported from a1111\.png\./).waitFor();
    assert.equal(await page.inputValue('#prompt'), 'a lighthouse at dusk');
    assert.equal(await page.inputValue('#negative'), 'fog');
    assert.equal(await page.inputValue('#steps'), '12');
    assert.equal(await page.inputValue('#guidance'), '5.5');
    assert.equal(await page.inputValue('#seed'), '4242');
    assert.equal(await page.inputValue('#sampler'), 'euler');
    assert.equal(await page.inputValue('#model'), 'e2e-sdxl');
    assert.equal(await page.inputValue('#size'), '64x64');
    assert.ok(await page.isChecked('#hires'));
    assert.equal(await page.inputValue('#hires-scale'), '1.5');
    assert.equal(await page.inputValue('#hires-steps'), '3');
    assert.equal(await page.inputValue('#hires-denoise'), '0.35');
    assert.equal(await page.inputValue('#hires-upscaler'), 'latent');
    await page.uncheck('#hires');
    await page.selectOption('#model', '');
  });

  test('SDXL models: their native size and size buckets, micro-conditioning under advanced settings', async () => {
    await removeImage(page);
    await page.uncheck('#hires');
    await page.fill('#prompt', 'a red circle on a blue background');
    await page.selectOption('#model', '');
    assert.ok(await page.locator('#micro-set').isHidden(), 'micro-conditioning shown for an SD model');
    const sdSizes = await page.locator('#size option').evaluateAll((os) => os.map((o) => o.value));
    assert.ok(sdSizes.includes('512x768'), sdSizes.join(' '));

    await page.selectOption('#model', 'e2e-sdxl');
    await page.locator('#micro-set').waitFor();
    // The tiny SDXL model is native 64²: the default is its size and the
    // menu offers SDXL's aspect-ratio buckets at its scale.
    assert.equal(await page.locator('#size option[value="default"]').textContent(), 'Model\'s (64 × 64)');
    const sizes = await page.locator('#size option').evaluateAll((os) => os.map((o) => o.value));
    assert.ok(!sizes.includes('512x768'), sizes.join(' '));
    assert.ok(sizes.includes('72x64') && sizes.includes('64x96'), sizes.join(' '));

    await page.selectOption('#size', 'default');
    await page.fill('#micro-original-width', '128');
    await page.fill('#micro-original-height', '96');
    await page.fill('#micro-crop-left', '8');
    await page.fill('#micro-crop-top', '4');
    await page.fill('#micro-target-width', '64');
    await page.fill('#micro-target-height', '64');
    const { body, status, job } = await submitAndCapture(page);
    assert.equal(status, 202, JSON.stringify(job));
    const micro = { original_width: 128, original_height: 96, crop_left: 8, crop_top: 4, target_width: 64, target_height: 64 };
    assert.deepEqual(body.micro_conditioning, micro);
    assert.equal(body.model, 'e2e-sdxl');
    assert.deepEqual(job.params.micro_conditioning, micro);
    const done = await waitJob(page, openURL(), job.id);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.deepEqual([done.images[0].width, done.images[0].height], [64, 64]);

    // Junk is refused next to the fields; an SD model gets none of them.
    await page.fill('#micro-crop-top', '20000');
    await page.click('#submit');
    await page.locator('#err-micro').getByText(/whole numbers from 0 to 16384/).waitFor();
    await page.fill('#micro-crop-top', '4');
    await page.selectOption('#model', '');
    assert.ok(await page.locator('#micro-set').isHidden());
    const sd = await submitAndCapture(page);
    assert.equal(sd.status, 202, JSON.stringify(sd.job));
    assert.equal(sd.body.micro_conditioning, undefined);

    // "Use these settings again" brings the SDXL job's micro-conditioning back.
    await page.locator('#micro-original-width').evaluate((el) => { el.value = ''; }); // hidden for the SD model
    await card(page, job.id).getByRole('button', { name: 'Use these settings again' }).click();
    assert.equal(await page.inputValue('#model'), 'e2e-sdxl');
    assert.equal(await page.inputValue('#micro-original-width'), '128');
    assert.equal(await page.inputValue('#micro-crop-left'), '8');
    await waitJob(page, openURL(), sd.job.id);
  });

  test('the page shows no script errors', () => {
    assert.deepEqual(b.problems, []);
  });
});
