// Pure helpers of the web client: limits, request building and validation,
// and the words the page uses for progress, queue positions and failures.
// Nothing here touches the DOM, so the unit tests run it under Node.

/** Common sizes offered in the size menu, width × height. */
export const SIZE_PRESETS = [
  [128, 128], [256, 256], [512, 512], [512, 768], [768, 512], [768, 768], [1024, 1024],
];

/** SDXL's training resolutions at its 1024² native area (width × height). */
export const SDXL_BUCKETS = [
  [1024, 1024], [1152, 896], [896, 1152], [1216, 832], [832, 1216], [1344, 768], [768, 1344], [1536, 640], [640, 1536],
];

/**
 * The sizes the size menu offers for a model (GET /v1/models' entry): for
 * an SDXL model its training buckets scaled to the model's native area
 * (exactly SDXL's at 1024²), sides rounded to multiples of 8; for others
 * SIZE_PRESETS.
 */
export function sizePresets(model) {
  if (model?.family !== 'sdxl') return SIZE_PRESETS;
  const nw = model.native_width || 1024;
  const nh = model.native_height || 1024;
  const scale = Math.sqrt((nw * nh) / (1024 * 1024));
  const out = [];
  for (const [w, h] of SDXL_BUCKETS) {
    const size = [Math.max(64, Math.round((w * scale) / 8) * 8), Math.max(64, Math.round((h * scale) / 8) * 8)];
    if (!out.some(([a, b]) => a === size[0] && b === size[1])) out.push(size);
  }
  return out;
}

/** Label of a size preset ("512 × 768 (portrait)"). */
export function sizeLabel(w, h) {
  const shape = w === h ? 'square' : w < h ? 'portrait' : 'landscape';
  return `${w} × ${h} (${shape})`;
}

/**
 * The limits a request must meet: the tenant's quota (from GET /v1/account)
 * combined with the chosen profile's caps (from GET /v1/profiles).
 */
export function effectiveLimits(account, profile) {
  const q = account?.quota ?? {};
  const l = account?.limits ?? {};
  const cap = (a, b) => Math.min(a ?? Infinity, b ?? Infinity);
  return {
    minSide: l.min_side ?? 64,
    maxSide: l.max_side ?? 4096,
    maxPixels: cap(q.max_pixels, profile?.max_pixels),
    maxSteps: cap(q.max_steps, profile?.max_steps),
    maxN: cap(q.max_n, profile?.max_n),
    maxGuidance: l.max_guidance ?? 30,
    maxSeed: l.max_seed ?? Number.MAX_SAFE_INTEGER,
    maxPromptChars: l.max_prompt_chars ?? 4000,
  };
}

/** Whether a size is allowed by the limits; returns a reason or "". */
export function sizeProblem(w, h, lim) {
  for (const [name, v] of [['Width', w], ['Height', h]]) {
    if (!Number.isInteger(v)) return `${name} must be a whole number.`;
    if (v < lim.minSide || v > lim.maxSide) return `${name} must be from ${lim.minSide} to ${lim.maxSide} pixels.`;
    if (v % 8 !== 0) return `${name} must be a multiple of 8 (try ${Math.max(lim.minSide, Math.round(v / 8) * 8)}).`;
  }
  if (w * h > lim.maxPixels) {
    return `${w} × ${h} is ${(w * h).toLocaleString('en')} pixels; your limit is ${lim.maxPixels.toLocaleString('en')}.`;
  }
  return '';
}

/** Parses a form value as an integer; "" gives null, junk gives NaN. */
export function parseIntField(v) {
  const s = String(v ?? '').trim();
  if (s === '') return null;
  return /^\d+$/.test(s) ? Number(s) : NaN;
}

/** Parses a form value as a number; "" gives null, junk gives NaN. */
export function parseNumberField(v) {
  const s = String(v ?? '').trim();
  if (s === '') return null;
  return /^\d+(\.\d+)?$|^\.\d+$/.test(s) ? Number(s) : NaN;
}

/** The settings the form starts with. Empty strings mean "the profile's default". */
export function defaultSettings() {
  return {
    prompt: '', negative_prompt: '', model: '', profile: '', size: 'default', width: '', height: '',
    steps: '', guidance: '', sampler: '', seed: '', n: '1',
    hires: '', hires_scale: '2', hires_width: '', hires_height: '', hires_upscaler: 'latent', hires_steps: '',
    hires_denoise: '',
    ...Object.fromEntries(MICRO_FIELDS.map((k) => [`micro_${k}`, ''])),
  };
}

/** The micro_conditioning fields the form offers for SDXL models. */
export const MICRO_FIELDS = ['original_width', 'original_height', 'crop_left', 'crop_top', 'target_width', 'target_height'];

/** The largest micro-conditioning size or crop the server accepts. */
const MAX_MICRO = 16384;

/**
 * The size the hires fix produces from a first pass of w × h: its own
 * width and height when given (one of them left empty keeps the aspect
 * ratio), else w × h times the scale; sides rounded down to multiples of 8
 * (as the server does).
 * NaN sides when the fields are junk.
 */
export function hiresSize(s, w, h) {
  const hw = parseIntField(s.hires_width) || null;
  const hh = parseIntField(s.hires_height) || null;
  if (hw !== null && hh !== null) return [hw, hh];
  if (hw !== null) return [hw, Math.floor(Math.floor((hw * h) / w) / 8) * 8];
  if (hh !== null) return [Math.floor(Math.floor((hh * w) / h) / 8) * 8, hh];
  const scale = parseNumberField(s.hires_scale) ?? 2;
  if (Number.isNaN(scale) || !(w > 0) || !(h > 0)) return [NaN, NaN];
  return [Math.floor(Math.floor(w * scale) / 8) * 8, Math.floor(Math.floor(h * scale) / 8) * 8];
}

/**
 * The size a request without width and height gets, as the server decides
 * it: the model's native size (GET /v1/models) where it is known and within
 * the limits, else the profile's. Returns {width, height, source} with
 * source 'model' or 'profile', or null when neither is known.
 */
export function defaultSize(model, profile, lim) {
  const w = model?.native_width;
  const h = model?.native_height;
  const side = (v) => Number.isInteger(v) && v >= lim.minSide && v <= lim.maxSide && v % 8 === 0;
  if (side(w) && side(h) && w * h <= lim.maxPixels) return { width: w, height: h, source: 'model' };
  if (profile) return { width: profile.width, height: profile.height, source: 'profile' };
  return null;
}

/**
 * The width and height a request will get: the chosen size, or for the
 * "default" choice the default size ({width, height}: defaultSize's answer).
 */
export function chosenSize(s, dflt) {
  if (s.size === 'default') return dflt ? [dflt.width, dflt.height] : [null, null];
  if (s.size === 'custom') return [parseIntField(s.width), parseIntField(s.height)];
  const m = /^(\d+)x(\d+)$/.exec(s.size);
  return m ? [Number(m[1]), Number(m[2])] : [NaN, NaN];
}

/**
 * Checks settings against the limits. Returns {field: message} keyed by the
 * API's field names (prompt, width, steps, guidance, seed, n); empty when
 * the settings are fine.
 */
export function validateSettings(s, lim, dflt, ctx = {}) {
  const errs = {};
  if (!s.prompt.trim()) errs.prompt = 'Write a prompt first.';
  else if ([...s.prompt].length > lim.maxPromptChars) errs.prompt = `The prompt is longer than ${lim.maxPromptChars} characters.`;
  if ([...s.negative_prompt].length > lim.maxPromptChars) {
    errs.negative_prompt = `The negative prompt is longer than ${lim.maxPromptChars} characters.`;
  }
  const [w, h] = chosenSize(s, dflt);
  if (w !== null || h !== null) {
    const p = sizeProblem(w, h, lim);
    if (p) errs.width = p;
  }
  const steps = parseIntField(s.steps);
  if (Number.isNaN(steps) || steps === 0) errs.steps = 'Steps must be a whole number of at least 1.';
  else if (steps !== null && steps > lim.maxSteps) errs.steps = `At most ${lim.maxSteps} steps are allowed.`;
  const g = parseNumberField(s.guidance);
  if (Number.isNaN(g) || (g !== null && g > lim.maxGuidance)) errs.guidance = `Guidance must be a number from 0 to ${lim.maxGuidance}.`;
  const seed = parseIntField(s.seed);
  if (Number.isNaN(seed) || (seed !== null && seed > lim.maxSeed)) {
    errs.seed = `The seed must be a whole number from 0 to ${lim.maxSeed}, or empty for a random one.`;
  }
  const n = parseIntField(s.n);
  if (Number.isNaN(n) || n === 0) errs.n = 'The number of images must be at least 1.';
  else if (n !== null && n > lim.maxN) errs.n = `At most ${lim.maxN} images per job are allowed.`;
  if (s.hires) {
    const p = ctx.editing ? 'The hires fix makes new images only: remove the image to edit, or turn it off.'
      : hiresProblem(s, w, h, lim);
    if (p) errs.hires = p;
  }
  if (ctx.family === 'sdxl') {
    for (const k of MICRO_FIELDS) {
      const v = parseIntField(s[`micro_${k}`]);
      if (Number.isNaN(v) || (v !== null && v > MAX_MICRO)) {
        errs.micro_conditioning = `Micro-conditioning sizes and crops must be whole numbers from 0 to ${MAX_MICRO}, or empty.`;
        break;
      }
    }
  }
  return errs;
}

/** What is wrong with the hires-fix settings for a first pass of w × h ("" when nothing). */
function hiresProblem(s, w, h, lim) {
  const scale = parseNumberField(s.hires_scale);
  const hw = parseIntField(s.hires_width);
  const hh = parseIntField(s.hires_height);
  if (Number.isNaN(hw) || Number.isNaN(hh)) return 'The hires width and height must be whole numbers of pixels.';
  if (hw === null && hh === null && (Number.isNaN(scale) || (scale !== null && (scale <= 1 || scale > 4)))) {
    return 'The hires scale must be a number above 1 and at most 4.';
  }
  if (w !== null && h !== null && !Number.isNaN(w) && !Number.isNaN(h)) {
    const [tw, th] = hiresSize(s, w, h);
    const p = sizeProblem(tw, th, lim);
    if (p) return `Hires size: ${p}`;
    if (tw < w || th < h) return `The hires size ${tw} × ${th} must not be smaller than the first pass (${w} × ${h}).`;
  }
  const steps = parseIntField(s.hires_steps);
  if (Number.isNaN(steps) || steps === 0 || (steps !== null && steps > lim.maxSteps)) {
    return `Hires steps must be a whole number from 1 to ${lim.maxSteps}, or empty for the same as the first pass.`;
  }
  const d = parseNumberField(s.hires_denoise);
  if (Number.isNaN(d) || (d !== null && (d <= 0 || d > 1))) return 'Hires denoising must be above 0 and at most 1.';
  return '';
}

/**
 * The body of POST /v1/jobs for valid settings (empty fields are left
 * out). ctx.family is the model's family: micro-conditioning goes only to
 * SDXL models; ctx.editing tells that an init image goes with the request
 * (the hires fix does not combine with one).
 */
export function buildRequest(s, dflt, ctx = {}) {
  const r = { prompt: s.prompt };
  if (s.negative_prompt.trim()) r.negative_prompt = s.negative_prompt;
  if (s.model) r.model = s.model;
  if (s.profile) r.profile = s.profile;
  if (s.size !== 'default') {
    const [w, h] = chosenSize(s, dflt);
    r.width = w;
    r.height = h;
  }
  const steps = parseIntField(s.steps);
  if (steps !== null) r.steps = steps;
  const g = parseNumberField(s.guidance);
  if (g !== null) r.guidance = g;
  if (s.sampler) r.sampler = s.sampler;
  const seed = parseIntField(s.seed);
  if (seed !== null) r.seed = seed;
  const n = parseIntField(s.n);
  if (n !== null && n !== 1) r.n = n;
  if (s.hires) {
    const hr = { upscaler: s.hires_upscaler || 'latent' };
    const hw = parseIntField(s.hires_width);
    const hh = parseIntField(s.hires_height);
    if (hw || hh) {
      hr.width = hw ?? 0; // 0: keeps the first pass's aspect ratio
      hr.height = hh ?? 0;
    } else {
      hr.scale = parseNumberField(s.hires_scale) ?? 2;
    }
    const hs = parseIntField(s.hires_steps);
    if (hs !== null) hr.steps = hs;
    const hd = parseNumberField(s.hires_denoise);
    if (hd !== null) hr.denoise = hd;
    r.hires = hr;
  }
  if (ctx.family === 'sdxl') {
    const m = {};
    for (const k of MICRO_FIELDS) {
      const v = parseIntField(s[`micro_${k}`]);
      if (v !== null) m[k] = v;
    }
    if (Object.keys(m).length) r.micro_conditioning = m;
  }
  return r;
}

/**
 * Settings that reproduce a job's image (for "use these settings again").
 * A hires-fix job's width and height are its first pass's (what the form
 * asks for); presets are the sizes the menu offers for the job's model.
 */
export function settingsFromParams(p, seed, presets = SIZE_PRESETS) {
  const preset = presets.some(([w, h]) => w === p.width && h === p.height);
  const hr = p.hires ?? null;
  const micro = p.micro_conditioning ?? {};
  const str = (v) => (v === undefined || v === null ? '' : String(v));
  return {
    hires: hr ? '1' : '', hires_scale: hr?.scale ? str(hr.scale) : '2', hires_width: hr?.width ? str(hr.width) : '',
    hires_height: hr?.height ? str(hr.height) : '', hires_upscaler: hr?.upscaler || 'latent',
    hires_steps: str(hr?.steps), hires_denoise: str(hr?.denoise),
    ...Object.fromEntries(MICRO_FIELDS.map((k) => [`micro_${k}`, micro[k] ? String(micro[k]) : ''])),
    prompt: p.prompt ?? '', negative_prompt: p.negative_prompt ?? '', model: p.model ?? '', profile: p.profile ?? '',
    size: preset ? `${p.width}x${p.height}` : 'custom', width: String(p.width ?? ''), height: String(p.height ?? ''),
    steps: String(p.steps ?? ''), guidance: String(p.guidance ?? ''), sampler: p.sampler ?? '',
    seed: String(seed ?? p.seed ?? ''), n: String(p.n ?? 1),
  };
}

/** A random seed below 2³², as the server draws them. */
export function randomSeed() {
  const a = new Uint32Array(1);
  globalThis.crypto.getRandomValues(a);
  return a[0];
}

/** "0.4 s", "12 s", "3 min 5 s", "1 h 2 min". */
export function formatDuration(sec) {
  if (!Number.isFinite(sec) || sec < 0) return '';
  if (sec < 10) return `${(Math.round(sec * 10) / 10).toFixed(1)} s`;
  const s = Math.round(sec);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
  const h = Math.floor(m / 60);
  return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
}

/** Seconds left at a step rate, or null when unknown. */
export function etaSeconds(step, steps, its) {
  if (!(its > 0) || !(steps > 0) || step > steps) return null;
  return (steps - step) / its;
}

/** "Step 3 of 8 · 2.4 it/s · about 2.1 s left". */
export function progressText(step, steps, its) {
  if (!(steps > 0)) return 'Starting…';
  const parts = [`Step ${step} of ${steps}`];
  if (its > 0) parts.push(`${its >= 10 ? its.toFixed(0) : its.toFixed(1)} it/s`);
  const eta = etaSeconds(step, steps, its);
  if (eta !== null && step < steps) parts.push(`about ${formatDuration(eta)} left`);
  if (step >= steps) parts.push('finishing');
  return parts.join(' · ');
}

/** "Waiting in the queue — next in line" / "… 3 jobs ahead". */
export function queueText(ahead) {
  if (ahead === null || ahead === undefined || !Number.isFinite(ahead)) return 'Waiting in the queue';
  if (ahead <= 0) return 'Waiting in the queue — next in line';
  return `Waiting in the queue — ${ahead} ${ahead === 1 ? 'job' : 'jobs'} ahead`;
}

/**
 * Jobs ahead: the position the server gave (GET /v1/jobs re-reads it while
 * the job waits); without one, an estimate from the queue depth.
 */
export function jobsAhead(position, queueDepth) {
  if (Number.isInteger(position)) return Math.max(0, position);
  return queueDepth > 0 ? queueDepth - 1 : null;
}

const FAILURES = {
  engine_error: 'The model ran into an error while making this image.',
  model_unavailable: 'The model could not be loaded, so the job could not run.',
  attempts_exhausted: 'The job was started several times and never finished: the workers running it stopped each time.',
  lost: 'The job was lost: the server stopped before it could finish, and it could not be resumed.',
  invalid_job: 'The worker could not run a job with these settings.',
};

/** A failed job's reason in plain words: {summary, detail (the server's message)}. */
export function failureText(err) {
  const code = err?.code ?? '';
  const summary = FAILURES[code] ?? 'The job failed.';
  return { summary, detail: err?.message ?? '' };
}

const FIELD_NAMES = {
  prompt: 'Prompt', negative_prompt: 'Negative prompt', model: 'Model', profile: 'Profile', width: 'Size',
  height: 'Size', steps: 'Steps', guidance: 'Guidance', sampler: 'Sampler', seed: 'Seed', n: 'Images',
  hires: 'Hires fix', micro_conditioning: 'Micro-conditioning', init_image: 'Image', mask: 'Mask', outpaint: 'Outpaint',
  strength: 'Denoising strength', mask_blur: 'Mask blur', inpaint_fill: 'Masked content', inpaint_full_res: 'Inpaint area',
  inpaint_full_res_padding: 'Padding',
};

/** An API error from submitting a job, in plain words. */
export function submitErrorText(e) {
  const msg = e?.message ?? 'Something went wrong.';
  switch (e?.code) {
    case 'rate_limited':
    case 'too_many_jobs': {
      const wait = e.retryAfter ? ` Try again in ${formatDuration(e.retryAfter)}.` : ' Try again in a moment.';
      return `Slow down: ${sentence(msg)}${wait}`;
    }
    case 'unavailable':
      return `The server cannot take the job right now: ${sentence(msg)}`;
    case 'network':
      return 'The server could not be reached. Check that Kiln is running, then try again.';
    default: {
      const f = e?.field && FIELD_NAMES[e.field];
      return f ? `${f}: ${sentence(msg)}` : sentence(msg);
    }
  }
}

/** Capitalises and ends a server message as a sentence. */
export function sentence(s) {
  const t = String(s ?? '').trim();
  if (!t) return '';
  const c = t[0].toUpperCase() + t.slice(1);
  return /[.!?]$/.test(c) ? c : c + '.';
}

/** "1.5 GiB". */
export function formatBytes(n) {
  if (!Number.isFinite(n) || n < 0) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

/** Rank of a job status: a later event never moves a job back. */
export function statusRank(status) {
  switch (status) {
    case 'queued': return 0;
    case 'running': return 1;
    case 'succeeded':
    case 'failed':
    case 'canceled': return 2;
    default: return -1;
  }
}

/** Whether a status is final. */
export function isFinal(status) {
  return statusRank(status) === 2;
}

/**
 * Inserts an installed LoRA (`<lora:name:1>`, A1111's syntax) or
 * embedding (its name) into prompt text at the caret, separated from its
 * neighbours by a space. Returns the new text and caret.
 */
export function insertExtraNetwork(text, caret, kind, name) {
  const at = Math.max(0, Math.min(caret ?? text.length, text.length));
  const snippet = kind === 'lora' ? `<lora:${name}:1>` : name;
  const before = text.slice(0, at);
  const after = text.slice(at);
  const lead = before === '' || /\s$/.test(before) ? '' : ' ';
  const trail = after === '' || /^\s/.test(after) ? '' : ' ';
  const out = before + lead + snippet + trail + after;
  return { text: out, caret: before.length + lead.length + snippet.length };
}
