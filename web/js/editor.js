// The image panel of the generate form: an init image uploaded, dropped
// or sent from a finished job; a mask painted over it on a canvas (brush
// size, paint/erase, invert, clear) for inpainting; the four outpaint
// sides as number boxes and as handles dragged on the picture's edges;
// the denoising strength. Its request() gives the edit's fields of
// POST /v1/jobs (init_image, mask, outpaint, …).

import { EDIT_MODES, SIDES, snap8, outpaintSize, maskPixels, invertLayer, editProblem, editFields } from './edit.js';

// Colour of the painted mask as shown over the picture (the layer is shown
// half transparent).
const TINT = [255, 48, 48];
const IMAGE_TYPES = ['image/png', 'image/jpeg'];

/** ImageEditor drives the #edit panel. */
export class ImageEditor {
  /**
   * root: the #edit element; onChange(): the image, mode or canvas size
   * changed (the size menu's default follows them).
   */
  constructor(root, { onChange = () => {} } = {}) {
    this.root = root;
    this.onChange = onChange;
    this.el = (id) => root.querySelector(`#${id}`);
    this.image = null; // {blob, url, name, width, height}
    this.tool = 'paint';
    this.painting = null;
    this.mask = this.el('edit-mask');
    this.ctx = this.mask.getContext('2d', { willReadFrequently: true });

    this.el('edit-pick').addEventListener('click', () => this.el('edit-file').click());
    this.el('edit-file').addEventListener('change', (e) => {
      const file = e.target.files?.[0];
      e.target.value = '';
      if (file) this.load(file, file.name).catch((err) => this.showError('init_image', err.message));
    });
    // A dropped image becomes the init image (not a settings import: the
    // form's own drop handler is kept out).
    root.addEventListener('dragover', (e) => {
      if ([...(e.dataTransfer?.items ?? [])].some((i) => i.kind === 'file')) {
        e.preventDefault();
        e.stopPropagation();
        root.classList.add('is-drop');
      }
    });
    root.addEventListener('dragleave', () => root.classList.remove('is-drop'));
    root.addEventListener('drop', (e) => {
      root.classList.remove('is-drop');
      const file = [...(e.dataTransfer?.files ?? [])].find((f) => f.type.startsWith('image/'));
      if (!file) return;
      e.preventDefault();
      e.stopPropagation();
      this.load(file, file.name).catch((err) => this.showError('init_image', err.message));
    });
    this.el('edit-remove').addEventListener('click', () => this.clear());
    this.el('edit-mode').addEventListener('change', () => this.setMode(this.el('edit-mode').value));
    for (const side of SIDES) {
      this.el(`outpaint-${side}`).addEventListener('input', () => {
        this.clearError();
        this.layout();
        this.onChange();
      });
      this.setupHandle(this.el(`handle-${side}`), side);
    }
    for (const id of ['strength', 'mask-blur', 'inpaint-padding', 'inpaint-fill', 'inpaint-full-res']) {
      this.el(id).addEventListener('input', () => this.clearError());
    }
    this.el('inpaint-full-res').addEventListener('change', () => {
      this.el('inpaint-padding').disabled = !this.el('inpaint-full-res').checked;
    });
    this.el('tool-paint').addEventListener('click', () => this.setTool('paint'));
    this.el('tool-erase').addEventListener('click', () => this.setTool('erase'));
    this.el('mask-invert').addEventListener('click', () => this.invert());
    this.el('mask-clear').addEventListener('click', () => {
      this.ctx.clearRect(0, 0, this.mask.width, this.mask.height);
      this.updateMaskInfo();
    });
    this.el('brush').addEventListener('input', () => this.updateBrushLabel());
    this.setupPainting();
  }

  /** Whether an image is loaded. */
  get active() {
    return !!this.image;
  }

  /** The chosen mode: img2img, inpaint or outpaint. */
  get mode() {
    return this.el('edit-mode').value;
  }

  /** The outpaint sides as entered (strings). */
  sides() {
    return Object.fromEntries(SIDES.map((s) => [s, this.el(`outpaint-${s}`).value]));
  }

  /** Outpaint sides as numbers (junk counts as 0). */
  sideNumbers() {
    return Object.fromEntries(SIDES.map((s) => {
      const v = Number(this.el(`outpaint-${s}`).value);
      return [s, Number.isInteger(v) && v > 0 ? v : 0];
    }));
  }

  /**
   * The size of the image the job makes without an explicit size: the
   * init image's (sides rounded down to multiples of 8, as the server does)
   * or, outpainting, the extended canvas. null without an image.
   */
  defaultSize() {
    if (!this.image) return null;
    const { width: w, height: h } = this.image;
    if (this.mode === 'outpaint') {
      const [cw, ch] = outpaintSize(w, h, this.sideNumbers());
      return { width: cw, height: ch, source: 'canvas' };
    }
    return { width: Math.max(64, Math.floor(w / 8) * 8), height: Math.max(64, Math.floor(h / 8) * 8), source: 'image' };
  }

  /**
   * Loads an image (a File or Blob) as the init image; mode is the mode to
   * switch to ('' keeps the current one).
   */
  async load(blob, name = 'image', mode = '') {
    if (!blob.type.startsWith('image/')) throw new Error(`${name} is not an image`);
    const url = URL.createObjectURL(blob);
    const img = this.el('edit-image');
    try {
      await new Promise((resolve, reject) => {
        img.onload = resolve;
        img.onerror = () => reject(new Error(`${name} could not be read as an image`));
        img.src = url;
      });
    } catch (err) {
      URL.revokeObjectURL(url);
      img.removeAttribute('src');
      throw err;
    }
    if (this.image) URL.revokeObjectURL(this.image.url);
    this.image = { blob, url, name, width: img.naturalWidth, height: img.naturalHeight };
    img.alt = `The image to edit: ${name}, ${img.naturalWidth} × ${img.naturalHeight}`;
    this.mask.width = img.naturalWidth;
    this.mask.height = img.naturalHeight;
    this.ctx.clearRect(0, 0, this.mask.width, this.mask.height);
    const brush = this.el('brush');
    brush.max = String(Math.max(8, Math.round(Math.max(img.naturalWidth, img.naturalHeight) / 2)));
    brush.value = String(Math.max(2, Math.round(Math.min(img.naturalWidth, img.naturalHeight) / 10)));
    this.updateBrushLabel();
    for (const s of SIDES) this.el(`outpaint-${s}`).value = '';
    this.el('edit-empty').hidden = true;
    this.el('edit-panel').hidden = false;
    this.root.open = true;
    this.clearError();
    this.setMode(mode || this.mode);
    this.updateMaskInfo();
  }

  /** Removes the image (the form goes back to text-to-image). */
  clear() {
    if (this.image) URL.revokeObjectURL(this.image.url);
    this.image = null;
    this.el('edit-image').removeAttribute('src');
    this.el('edit-panel').hidden = true;
    this.el('edit-empty').hidden = false;
    this.clearError();
    this.onChange();
  }

  setMode(mode) {
    if (!EDIT_MODES.includes(mode)) mode = 'img2img';
    this.el('edit-mode').value = mode;
    this.root.dataset.mode = mode;
    this.el('inpaint-tools').hidden = mode !== 'inpaint';
    this.el('outpaint-tools').hidden = mode !== 'outpaint';
    this.el('edit-fill-tools').hidden = mode === 'img2img';
    this.mask.hidden = mode !== 'inpaint';
    for (const s of SIDES) this.el(`handle-${s}`).hidden = mode !== 'outpaint';
    this.clearError();
    this.layout();
    this.onChange();
  }

  setTool(tool) {
    this.tool = tool;
    this.el('tool-paint').setAttribute('aria-pressed', String(tool === 'paint'));
    this.el('tool-erase').setAttribute('aria-pressed', String(tool === 'erase'));
  }

  updateBrushLabel() {
    this.el('brush-value').textContent = `${this.el('brush').value} px`;
  }

  /**
   * Places the picture inside the frame: the frame has the outpainted
   * canvas's shape, the picture sits where the init image will be.
   */
  layout() {
    if (!this.image) return;
    const { width: w, height: h } = this.image;
    const o = this.mode === 'outpaint' ? this.sideNumbers() : { left: 0, right: 0, top: 0, bottom: 0 };
    const [cw, ch] = outpaintSize(w, h, o);
    const frame = this.el('edit-frame');
    // CSSOM (allowed by the style-src 'self' policy).
    frame.style.aspectRatio = `${cw} / ${ch}`;
    frame.style.width = `min(100%, ${((60 * cw) / ch).toFixed(2)}vh)`; // at most 60 % of the screen's height
    const box = this.el('edit-imagebox').style;
    box.left = `${(100 * o.left) / cw}%`;
    box.top = `${(100 * o.top) / ch}%`;
    box.width = `${(100 * w) / cw}%`;
    box.height = `${(100 * h) / ch}%`;
    const info = this.el('edit-info');
    info.textContent = this.mode === 'outpaint'
      ? `Image ${w} × ${h}; the canvas becomes ${cw} × ${ch}.`
      : `Image ${w} × ${h}.`;
  }

  // --- mask painting ---------------------------------------------------------

  setupPainting() {
    const c = this.mask;
    const at = (e) => {
      const r = c.getBoundingClientRect();
      return [((e.clientX - r.left) / r.width) * c.width, ((e.clientY - r.top) / r.height) * c.height];
    };
    c.addEventListener('pointerdown', (e) => {
      if (e.button !== 0 || !this.image) return;
      e.preventDefault();
      c.setPointerCapture?.(e.pointerId);
      this.painting = at(e);
      this.stroke(this.painting, this.painting);
    });
    c.addEventListener('pointermove', (e) => {
      if (!this.painting) return;
      const p = at(e);
      this.stroke(this.painting, p);
      this.painting = p;
    });
    const end = () => {
      if (!this.painting) return;
      this.painting = null;
      this.updateMaskInfo();
    };
    c.addEventListener('pointerup', end);
    c.addEventListener('pointercancel', end);
    c.addEventListener('lostpointercapture', end);
  }

  /** Paints (or erases) a round-capped line of the brush's width. */
  stroke([x0, y0], [x1, y1]) {
    const g = this.ctx;
    g.save();
    g.globalCompositeOperation = this.tool === 'erase' ? 'destination-out' : 'source-over';
    g.strokeStyle = `rgb(${TINT.join(' ')})`;
    g.fillStyle = g.strokeStyle;
    g.lineCap = 'round';
    g.lineJoin = 'round';
    g.lineWidth = Number(this.el('brush').value) || 1;
    g.beginPath();
    if (x0 === x1 && y0 === y1) {
      g.arc(x0, y0, g.lineWidth / 2, 0, 2 * Math.PI);
      g.fill();
    } else {
      g.moveTo(x0, y0);
      g.lineTo(x1, y1);
      g.stroke();
    }
    g.restore();
  }

  invert() {
    if (!this.image) return;
    const d = this.ctx.getImageData(0, 0, this.mask.width, this.mask.height);
    invertLayer(d.data, TINT);
    this.ctx.putImageData(d, 0, 0);
    this.updateMaskInfo();
  }

  /** The mask as the server takes it: {pixels (RGBA), white}. */
  maskData() {
    return maskPixels(this.ctx.getImageData(0, 0, this.mask.width, this.mask.height).data);
  }

  updateMaskInfo() {
    if (!this.image) return;
    const { white } = this.maskData();
    const share = white / (this.mask.width * this.mask.height);
    this.root.dataset.maskPixels = String(white);
    this.el('mask-info').textContent = white
      ? `The mask covers ${share < 0.01 ? 'under 1' : Math.round(share * 100)}% of the image.`
      : 'Nothing painted yet: paint over what should change.';
    if (white) this.clearError();
  }

  /** The mask as a PNG data: URL (white = repaint). */
  async maskPNG() {
    const { pixels } = this.maskData();
    const c = document.createElement('canvas');
    c.width = this.mask.width;
    c.height = this.mask.height;
    c.getContext('2d').putImageData(new ImageData(pixels, c.width, c.height), 0, 0);
    return dataURL(await new Promise((resolve) => c.toBlob(resolve, 'image/png')));
  }

  /** The init image as a data: URL: the file itself when PNG or JPEG, else re-encoded as PNG. */
  async initImageURL() {
    const { blob } = this.image;
    if (IMAGE_TYPES.includes(blob.type)) return dataURL(blob);
    const img = this.el('edit-image');
    const c = document.createElement('canvas');
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    c.getContext('2d').drawImage(img, 0, 0);
    return dataURL(await new Promise((resolve) => c.toBlob(resolve, 'image/png')));
  }

  // --- outpaint handles ------------------------------------------------------

  /**
   * A handle on one edge of the picture: dragging it outwards adds pixels
   * on that side (in steps of 8); arrow keys move it by 8 pixels.
   */
  setupHandle(handle, side) {
    const input = this.el(`outpaint-${side}`);
    const horizontal = side === 'left' || side === 'right';
    const outward = side === 'left' || side === 'top' ? -1 : 1;
    const set = (v) => {
      input.value = String(snap8(v));
      input.dispatchEvent(new Event('input', { bubbles: true }));
    };
    let drag = null;
    handle.addEventListener('pointerdown', (e) => {
      if (e.button !== 0 || !this.image) return;
      e.preventDefault();
      handle.setPointerCapture?.(e.pointerId);
      // Screen pixels per image pixel, from the picture as shown.
      const r = this.el('edit-imagebox').getBoundingClientRect();
      const perPixel = horizontal ? r.width / this.image.width : r.height / this.image.height;
      drag = { start: horizontal ? e.clientX : e.clientY, value: this.sideNumbers()[side], perPixel };
    });
    handle.addEventListener('pointermove', (e) => {
      if (!drag) return;
      const moved = ((horizontal ? e.clientX : e.clientY) - drag.start) * outward;
      set(drag.value + moved / drag.perPixel);
    });
    const end = () => { drag = null; };
    handle.addEventListener('pointerup', end);
    handle.addEventListener('pointercancel', end);
    handle.addEventListener('keydown', (e) => {
      const grow = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -1, ArrowDown: 1 }[e.key];
      if (grow === undefined) return;
      if (horizontal !== (e.key === 'ArrowLeft' || e.key === 'ArrowRight')) return;
      e.preventDefault();
      set(this.sideNumbers()[side] + 8 * grow * outward);
    });
  }

  // --- request ----------------------------------------------------------------

  /** The panel's values for editProblem/editFields. */
  state() {
    return {
      mode: this.mode, width: this.image?.width ?? 0, height: this.image?.height ?? 0,
      strength: this.el('strength').value, maskWhite: this.mode === 'inpaint' ? this.maskData().white : 0,
      maskBlur: this.el('mask-blur').value, fill: this.el('inpaint-fill').value,
      fullRes: this.el('inpaint-full-res').checked, padding: this.el('inpaint-padding').value, outpaint: this.sides(),
    };
  }

  /** Checks the panel; shows and returns the problem, or null. */
  check() {
    if (!this.image) return null;
    const p = editProblem(this.state());
    this.clearError();
    if (p) this.showError(p.field, p.message);
    return p;
  }

  /** The edit's request fields ({} without an image); call check() first. */
  async request() {
    if (!this.image) return {};
    const s = this.state();
    const mask = s.mode === 'inpaint' ? await this.maskPNG() : '';
    return editFields(s, { initImage: await this.initImageURL(), mask });
  }

  /** Shows an error of an edit field (API field names); false when not one of the panel's. */
  showError(field, msg) {
    const ctl = {
      init_image: 'edit-pick', mask: 'edit-mask', outpaint: `outpaint-${SIDES[0]}`, strength: 'strength',
      mask_blur: 'mask-blur', inpaint_fill: 'inpaint-fill', inpaint_full_res: 'inpaint-full-res',
      inpaint_full_res_padding: 'inpaint-padding',
    }[field];
    if (!ctl) return false;
    const box = this.el('err-edit');
    box.textContent = msg;
    box.hidden = false;
    this.root.open = true;
    const el = this.el(ctl);
    if (field !== 'mask' && field !== 'init_image') {
      el.setAttribute('aria-invalid', 'true');
      el.focus();
    }
    return true;
  }

  clearError() {
    const box = this.el('err-edit');
    box.hidden = true;
    box.textContent = '';
    for (const el of this.root.querySelectorAll('[aria-invalid="true"]')) el.removeAttribute('aria-invalid');
  }
}

/** A Blob as a base64 data: URL. */
function dataURL(blob) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error ?? new Error('the image could not be read'));
    r.readAsDataURL(blob);
  });
}
