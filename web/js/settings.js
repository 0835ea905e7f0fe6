// The generate form: its menus filled from the server (models, profiles,
// samplers, the tenant's limits), its values kept in localStorage across
// reloads, client-side checks against the limits, and errors shown next to
// the field they concern.

import { h } from './dom.js';
import { readPNGText, parseParameters, settingsFromParameters } from './pngparams.js';
import {
  sizePresets, sizeLabel, effectiveLimits, defaultSize, defaultSettings, validateSettings, buildRequest, randomSeed,
  chosenSize, hiresSize, MICRO_FIELDS,
} from './format.js';

const STORAGE_KEY = 'kiln.settings.v1';

// Form control of each settings key.
const CONTROLS = {
  prompt: 'prompt', negative_prompt: 'negative', model: 'model', profile: 'profile', size: 'size',
  width: 'width', height: 'height', steps: 'steps', guidance: 'guidance', sampler: 'sampler', seed: 'seed', n: 'n',
  hires: 'hires', hires_scale: 'hires-scale', hires_width: 'hires-width', hires_height: 'hires-height',
  hires_upscaler: 'hires-upscaler', hires_steps: 'hires-steps', hires_denoise: 'hires-denoise',
  ...Object.fromEntries(MICRO_FIELDS.map((k) => [`micro_${k}`, `micro-${k.replace('_', '-')}`])),
};

// Where the error of each API field is shown.
const ERROR_SLOT = {
  prompt: 'prompt', negative_prompt: 'negative', model: 'model', profile: 'profile', width: 'size', height: 'size',
  steps: 'steps', guidance: 'guidance', sampler: 'sampler', seed: 'seed', n: 'n', clip_skip: 'steps',
  hires: 'hires', micro_conditioning: 'micro',
};

// The control an error slot marks as invalid, where it is not the slot's own id.
const SLOT_CONTROL = { hires: 'hires-scale', micro: 'micro-original-width' };

/** SettingsForm drives the generate form. */
export class SettingsForm {
  /**
   * imageSize() gives the size an init image implies (the image panel's
   * defaultSize: {width, height, source 'image'|'canvas'}) or null.
   */
  constructor(form, { onSubmit, storage = globalThis.localStorage, imageSize = () => null }) {
    this.form = form;
    this.imageSize = imageSize;
    this.storage = storage;
    this.account = null;
    this.models = [];
    this.profiles = [];
    this.defaultProfile = '';
    this.el = (id) => form.querySelector(`#${id}`);
    this.advanced = this.el('advanced');

    form.addEventListener('submit', (e) => {
      e.preventDefault();
      onSubmit();
    });
    // Enter submits; Shift+Enter (or an IME composition) adds a line.
    for (const id of ['prompt', 'negative']) {
      this.el(id).addEventListener('keydown', (e) => {
        if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && !e.ctrlKey && !e.altKey && !e.metaKey) {
          e.preventDefault();
          form.requestSubmit();
        }
      });
    }
    form.addEventListener('input', (e) => {
      if (e.target.id === 'width' || e.target.id === 'height') this.el('size').value = 'custom';
      if (!CONTROL_IDS.has(e.target.id)) return; // the image panel's own controls
      this.clearError(e.target.id);
      this.showHires();
      this.save();
    });
    form.addEventListener('change', (e) => {
      if (e.target.id === 'profile' || e.target.id === 'model') this.refreshProfile();
      if (e.target.id === 'size') this.syncSize();
      if (!CONTROL_IDS.has(e.target.id)) return;
      this.showHires();
      this.save();
    });
    this.advanced.addEventListener('toggle', () => this.save());
    this.el('dice').addEventListener('click', () => {
      this.el('seed').value = String(randomSeed());
      this.clearError('seed');
      this.save();
    });
    // Import from a PNG's "parameters" (AUTOMATIC1111, Forge, Kiln): the
    // button's file picker, or a PNG dropped on the form.
    this.el('import-png').addEventListener('click', () => this.el('import-file').click());
    this.el('import-file').addEventListener('change', (e) => {
      const file = e.target.files?.[0];
      e.target.value = '';
      if (file) this.importPNG(file);
    });
    form.addEventListener('dragover', (e) => {
      if ([...(e.dataTransfer?.items ?? [])].some((i) => i.kind === 'file')) e.preventDefault();
    });
    form.addEventListener('drop', (e) => {
      const file = [...(e.dataTransfer?.files ?? [])].find((f) => f.type === 'image/png' || /\.png$/i.test(f.name));
      if (!file) return;
      e.preventDefault();
      this.importPNG(file);
    });
    this.el('reset').addEventListener('click', () => {
      const keep = this.read();
      this.write({ ...defaultSettings(), prompt: keep.prompt, negative_prompt: keep.negative_prompt });
      this.save();
    });
  }

  /** Fills the menus from the server's answers and restores saved values. */
  setOptions({ account, models, profiles, samplers }) {
    this.account = account;
    this.models = models.data ?? [];
    this.profiles = profiles.data ?? [];
    this.defaultProfile = profiles.default ?? '';
    const defModel = (models.data ?? []).find((m) => m.default)?.id ?? '';
    fill(this.el('model'), [
      ['', defModel ? `Default (${defModel})` : 'Default'],
      ...(models.data ?? []).map((m) => [m.id, m.id]),
    ]);
    fill(this.el('profile'), [
      ['', `Default (${this.defaultProfile})`],
      ...this.profiles.map((p) => [p.name, p.description ? `${p.name} — ${p.description}` : p.name]),
    ]);
    this.samplers = samplers.data ?? [];
    this.restore();
  }

  /** The profile that applies: the chosen one or the server's default. */
  currentProfile() {
    const name = this.el('profile').value || this.defaultProfile;
    return this.profiles.find((p) => p.name === name) ?? null;
  }

  /** The model that applies: the chosen one or the server's default. */
  currentModel() {
    const id = this.el('model').value;
    return this.models.find((m) => (id ? m.id === id : m.default)) ?? null;
  }

  /** The limits of the tenant and the chosen profile. */
  limits() {
    return effectiveLimits(this.account, this.currentProfile());
  }

  /**
   * The size a job gets without one: the init image's (or the outpainted
   * canvas's), else the model's native size, or the profile's.
   */
  defaultSize() {
    return this.imageSize() ?? defaultSize(this.currentModel(), this.currentProfile(), this.limits());
  }

  /** The model's family ("sd", "sdxl", …; "" when unknown). */
  family() {
    return this.currentModel()?.family ?? '';
  }

  /** Shows the hires fields when the hires fix is on, with the size it makes. */
  showHires() {
    const on = this.el('hires').checked;
    this.el('hires-fields').hidden = !on;
    const out = this.el('hires-size');
    if (!on) return;
    const s = this.read();
    const [w, hgt] = chosenSize(s, this.defaultSize());
    const [tw, th] = w && hgt ? hiresSize(s, w, hgt) : [NaN, NaN];
    out.textContent = Number.isFinite(tw) && Number.isFinite(th)
      ? `First pass ${w} × ${hgt}, then ${tw} × ${th}.` : '';
  }

  /** Rebuilds what depends on the model and profile: defaults shown, caps, size menu. */
  refreshProfile() {
    const p = this.currentProfile();
    const lim = this.limits();
    const sampler = this.el('sampler').value;
    const label = (id) => this.samplers.find((s) => s.id === id)?.label ?? id;
    fill(this.el('sampler'), [
      ['', p ? `Profile's (${label(p.sampler)})` : 'Profile\'s'],
      ...this.samplers.map((s) => [s.id, s.label]),
    ]);
    this.el('sampler').value = this.samplers.some((s) => s.id === sampler) ? sampler : '';

    const size = this.el('size').value;
    const d = this.defaultSize();
    const whose = { profile: 'Profile\'s', image: 'Image\'s', canvas: 'Outpainted canvas' }[d?.source] ?? 'Model\'s';
    const opts = [['default', d ? `${whose} (${d.width} × ${d.height})` : whose]];
    for (const [w, hgt] of sizePresets(this.currentModel())) {
      const over = w * hgt > lim.maxPixels;
      opts.push([`${w}x${hgt}`, sizeLabel(w, hgt) + (over ? ' — over your limit' : ''), over]);
    }
    opts.push(['custom', 'Custom…']);
    fill(this.el('size'), opts);
    this.el('size').value = opts.some(([v, , dis]) => v === size && !dis) ? size : 'default';
    // Outpainting sizes the canvas from the image and its sides.
    const locked = d?.source === 'canvas';
    if (locked) this.el('size').value = 'default';
    for (const id of ['size', 'width', 'height']) this.el(id).disabled = locked;
    this.el('micro-set').hidden = this.family() !== 'sdxl';

    this.el('steps').placeholder = p ? `profile: ${p.steps}` : '';
    this.el('steps').max = String(lim.maxSteps);
    this.el('guidance').placeholder = p ? `profile: ${p.guidance}` : '';
    this.el('guidance').max = String(lim.maxGuidance);
    this.el('n').max = String(lim.maxN);
    for (const id of ['width', 'height']) {
      this.el(id).min = String(lim.minSide);
      this.el(id).max = String(lim.maxSide);
    }
    this.el('steps-hint').textContent = `Empty uses the profile's ${p?.steps ?? ''}; at most ${lim.maxSteps}.`;
    this.el('size-hint').textContent = `Sides are multiples of 8; at most ${lim.maxPixels.toLocaleString('en')} pixels.`;
    this.el('n-hint').textContent = `At most ${lim.maxN} per job.`;
    this.el('guidance-hint').textContent = `Empty uses the profile's ${p?.guidance ?? ''}; 0 to ${lim.maxGuidance}.`;
    this.syncSize();
    this.showHires();
  }

  /** Shows the chosen size in the width and height boxes (typing in them
   * switches the menu to Custom). */
  syncSize() {
    const v = this.el('size').value;
    const w = this.el('width');
    const hgt = this.el('height');
    const m = /^(\d+)x(\d+)$/.exec(v);
    if (m) {
      w.value = m[1];
      hgt.value = m[2];
    } else if (v === 'default') {
      const d = this.defaultSize();
      w.value = d ? String(d.width) : '';
      hgt.value = d ? String(d.height) : '';
    }
  }

  /** The form's values. */
  read() {
    const s = {};
    for (const [k, id] of Object.entries(CONTROLS)) {
      const el = this.el(id);
      s[k] = el.type === 'checkbox' ? (el.checked ? '1' : '') : el.value;
    }
    return s;
  }

  /** Puts values into the form. */
  write(s) {
    const d = { ...defaultSettings(), ...s };
    // The model and profile first: the size menu's default depends on both.
    for (const k of ['model', 'profile']) {
      this.el(k).value = d[k];
      if (this.el(k).value !== d[k]) this.el(k).value = '';
    }
    this.refreshProfile();
    for (const [k, id] of Object.entries(CONTROLS)) {
      if (k === 'profile') continue;
      const el = this.el(id);
      if (el.type === 'checkbox') {
        el.checked = !!d[k];
        continue;
      }
      el.value = d[k] ?? '';
      if (el.tagName === 'SELECT' && el.value !== String(d[k] ?? '')) {
        // A value the server no longer offers (a removed model, a size now
        // over the limit): keep the width and height as a custom size.
        el.value = k === 'size' ? 'custom' : '';
      }
    }
    this.syncSize();
    if (d.size === 'custom' || this.el('size').value === 'custom') {
      this.el('width').value = d.width;
      this.el('height').value = d.height;
      // A custom size the menu offers (an SDXL bucket, say) is shown as that entry.
      const entry = [...this.el('size').options].find((o) => o.value === `${d.width}x${d.height}` && !o.disabled);
      if (entry) this.el('size').value = entry.value;
    }
    this.clearErrors();
  }

  /** Saves the values (and whether the advanced panel is open). */
  save() {
    try {
      this.storage.setItem(STORAGE_KEY, JSON.stringify({ ...this.read(), advancedOpen: this.advanced.open }));
    } catch { /* storage full or disabled: settings just do not persist */ }
  }

  /** Restores saved values, or the defaults. */
  restore() {
    let saved = null;
    try {
      saved = JSON.parse(this.storage.getItem(STORAGE_KEY) ?? 'null');
    } catch { /* corrupt: start over */ }
    this.write(saved && typeof saved === 'object' ? saved : defaultSettings());
    if (saved?.advancedOpen) this.advanced.open = true;
  }

  /** Loads settings from a job ("use these settings again"). */
  apply(s) {
    this.write(s);
    this.advanced.open = true;
    this.save();
    this.el('prompt').focus();
    this.form.scrollIntoView({ block: 'start', behavior: 'smooth' });
  }

  /** Fills the form from a PNG's generation parameters and says what it took. */
  async importPNG(file) {
    const note = this.el('import-note');
    note.hidden = false;
    try {
      const text = (await readPNGText(await file.arrayBuffer())).parameters;
      if (!text) {
        note.textContent = `${file.name} carries no generation parameters.`;
        return;
      }
      const { settings, skipped } = settingsFromParameters(parseParameters(text), {
        samplers: this.samplers ?? [], models: this.models.map((m) => m.id),
      });
      this.apply({ ...this.read(), ...settings });
      note.textContent = `Settings imported from ${file.name}` + (skipped.length ? ` (not available here: ${skipped.join(', ')}).` : '.');
    } catch (err) {
      note.textContent = `Could not read ${file.name}: ${err.message}`;
    }
  }

  /** Checks the form; returns the request body or null after showing errors. */
  request() {
    const s = this.read();
    const ctx = { family: this.family(), editing: !!this.imageSize() };
    const errs = validateSettings(s, this.limits(), this.defaultSize(), ctx);
    this.clearErrors();
    if (Object.keys(errs).length) {
      for (const [field, msg] of Object.entries(errs)) this.showError(field, msg);
      return null;
    }
    return buildRequest(s, this.defaultSize(), ctx);
  }

  /** Shows an error next to the field the API (or a check) named. */
  showError(field, msg) {
    const slot = ERROR_SLOT[field];
    if (!slot) return false;
    const box = this.el(`err-${slot}`);
    box.textContent = msg;
    box.hidden = false;
    const ctl = this.el(SLOT_CONTROL[slot] ?? slot);
    ctl.setAttribute('aria-invalid', 'true');
    if (ctl.closest('#advanced') && !this.advanced.open) this.advanced.open = true;
    if (!this.form.querySelector('[aria-invalid="true"]:focus')) {
      const first = this.form.querySelector('[aria-invalid="true"]');
      if (first) first.focus();
    }
    return true;
  }

  clearError(id) {
    const slot = { width: 'size', height: 'size' }[id]
      ?? (id.startsWith('hires') ? 'hires' : id.startsWith('micro-') ? 'micro' : id);
    const box = this.el(`err-${slot}`);
    if (box) {
      box.hidden = true;
      box.textContent = '';
    }
    this.el(SLOT_CONTROL[slot] ?? slot)?.removeAttribute('aria-invalid');
  }

  clearErrors() {
    for (const slot of new Set(Object.values(ERROR_SLOT))) this.clearError(slot);
  }
}

// Ids of the controls the settings keep (the image panel's are its own).
const CONTROL_IDS = new Set([...Object.values(CONTROLS), 'advanced']);

/** Replaces a select's options with [value, label, disabled] triples. */
function fill(select, options) {
  const v = select.value;
  select.replaceChildren(...options.map(([value, label, disabled]) => h('option', { value, disabled: !!disabled }, label)));
  if (options.some(([value, , dis]) => value === v && !dis)) select.value = v;
}
