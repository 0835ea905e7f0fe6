// Pure helpers of image editing (img2img, inpainting, outpainting): the
// mask's pixels, the outpainted canvas and the request fields. Nothing
// here touches the DOM, so the unit tests run it under Node.

import { parseIntField as intField, parseNumberField as numField } from './format.js';

/** The editing modes of the image panel. */
export const EDIT_MODES = ['img2img', 'inpaint', 'outpaint'];

/** The outpaint sides, in the order the form shows them. */
export const SIDES = ['left', 'right', 'top', 'bottom'];

/** The most pixels the server lets one side grow (its largest side). */
export const MAX_OUTPAINT = 4096;

/** Rounds a number of pixels to the nearest multiple of 8 within [0, max]. */
export function snap8(v, max = MAX_OUTPAINT) {
  const n = Math.round(Number(v) / 8) * 8;
  return Number.isFinite(n) ? Math.min(max, Math.max(0, n)) : 0;
}

/** The canvas an image of w × h becomes with the outpaint sides {left, right, top, bottom}. */
export function outpaintSize(w, h, o) {
  return [w + (o.left || 0) + (o.right || 0), h + (o.top || 0) + (o.bottom || 0)];
}

/**
 * The mask image the server takes (white = repaint, black = keep) from the
 * RGBA pixels of the painted layer, where any stroke is opaque: a pixel
 * more than half covered is white. Returns RGBA pixels (opaque grey) and
 * how many pixels are white.
 */
export function maskPixels(rgba) {
  const out = new Uint8ClampedArray(rgba.length);
  let white = 0;
  for (let i = 0; i < rgba.length; i += 4) {
    const v = rgba[i + 3] >= 128 ? 255 : 0;
    if (v) white++;
    out[i] = v;
    out[i + 1] = v;
    out[i + 2] = v;
    out[i + 3] = 255;
  }
  return { pixels: out, white };
}

/**
 * Inverts a painted layer in place: covered pixels become clear and clear
 * ones become covered in colour [r, g, b].
 */
export function invertLayer(rgba, [r, g, b]) {
  for (let i = 0; i < rgba.length; i += 4) {
    if (rgba[i + 3] >= 128) {
      rgba[i + 3] = 0;
    } else {
      rgba[i] = r;
      rgba[i + 1] = g;
      rgba[i + 2] = b;
      rgba[i + 3] = 255;
    }
  }
  return rgba;
}

/**
 * Checks the edit panel's state: {mode, width, height (the image's),
 * strength, maskWhite (painted pixels), maskBlur, fullRes, padding,
 * outpaint {left, right, top, bottom}}. Returns {field, message} in the
 * API's field names, or null when it is fine.
 */
export function editProblem(e) {
  const strength = numField(e.strength);
  if (Number.isNaN(strength) || (strength !== null && (strength <= 0 || strength > 1))) {
    return { field: 'strength', message: 'Denoising strength must be above 0 and at most 1.' };
  }
  if (e.mode === 'inpaint') {
    if (!(e.maskWhite > 0)) return { field: 'mask', message: 'Paint over the part of the image to repaint first.' };
    const blur = intField(e.maskBlur);
    if (Number.isNaN(blur) || (blur !== null && blur > 256)) {
      return { field: 'mask_blur', message: 'Mask blur must be a whole number of pixels from 0 to 256.' };
    }
    const pad = intField(e.padding);
    if (e.fullRes && (Number.isNaN(pad) || (pad !== null && pad > 1024))) {
      return { field: 'inpaint_full_res_padding', message: 'Padding must be a whole number of pixels from 0 to 1024.' };
    }
  }
  if (e.mode === 'outpaint') {
    const o = {};
    for (const side of SIDES) {
      const v = intField(e.outpaint?.[side]);
      if (Number.isNaN(v) || (v !== null && v > MAX_OUTPAINT)) {
        return { field: 'outpaint', message: `Outpaint ${side} must be a whole number of pixels from 0 to ${MAX_OUTPAINT}.` };
      }
      o[side] = v ?? 0;
    }
    if (SIDES.every((s) => o[s] === 0)) return { field: 'outpaint', message: 'Give at least one side to extend.' };
    const [w, h] = outpaintSize(e.width, e.height, o);
    if (w % 8 || h % 8) {
      return { field: 'outpaint', message: `The extended canvas is ${w} × ${h}; its sides must be multiples of 8 (change a side by a few pixels).` };
    }
  }
  return null;
}

/**
 * The request fields of an edit (to merge into POST /v1/jobs' body):
 * init_image, strength and, by mode, mask with its options or outpaint.
 * initImage and mask are data: URLs. The caller leaves width and height
 * out for outpainting (the server sizes the canvas).
 */
export function editFields(e, { initImage, mask = '' }) {
  const r = { init_image: initImage };
  const strength = numField(e.strength);
  if (strength !== null) r.strength = strength;
  if (e.mode === 'inpaint') {
    r.mask = mask;
    const blur = intField(e.maskBlur);
    if (blur !== null) r.mask_blur = blur;
    if (e.fill) r.inpaint_fill = e.fill;
    if (e.fullRes) {
      r.inpaint_full_res = true;
      const pad = intField(e.padding);
      if (pad !== null) r.inpaint_full_res_padding = pad;
    }
  } else if (e.mode === 'outpaint') {
    r.outpaint = {};
    for (const side of SIDES) {
      const v = intField(e.outpaint?.[side]);
      if (v) r.outpaint[side] = v;
    }
    const blur = intField(e.maskBlur);
    if (blur !== null) r.mask_blur = blur;
    if (e.fill) r.inpaint_fill = e.fill;
  }
  return r;
}
