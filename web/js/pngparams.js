// Reads the generation settings a PNG carries: the "parameters" text chunk
// that AUTOMATIC1111, Forge and Kiln write, turned into the generate form's
// settings (the web page's "Import from PNG").

import { SIZE_PRESETS } from './format.js';

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const latin1 = new TextDecoder('latin1');
const utf8 = new TextDecoder('utf-8');

/** Inflates zlib data (compressed text chunks). */
async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * The text chunks of a PNG (tEXt, zTXt, iTXt) as {keyword: text}; throws
 * when the data is not a PNG.
 */
export async function readPNGText(buffer) {
  const b = new Uint8Array(buffer);
  if (b.length < 8 || SIGNATURE.some((v, i) => b[i] !== v)) throw new Error('not a PNG file');
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out = {};
  for (let p = 8; p + 12 <= b.length;) {
    const len = dv.getUint32(p);
    const type = latin1.decode(b.subarray(p + 4, p + 8));
    const data = b.subarray(p + 8, p + 8 + len);
    if (p + 12 + len > b.length) throw new Error(`the PNG is truncated in its ${type} chunk`);
    p += 12 + len;
    if (type === 'IEND') break;
    const nul = data.indexOf(0);
    if (nul < 1) continue;
    const key = latin1.decode(data.subarray(0, nul));
    if (type === 'tEXt') {
      out[key] = latin1.decode(data.subarray(nul + 1));
    } else if (type === 'zTXt' && data[nul + 1] === 0) {
      out[key] = latin1.decode(await inflate(data.subarray(nul + 2)));
    } else if (type === 'iTXt') {
      const compressed = data[nul + 1] === 1;
      let q = nul + 3;
      const langEnd = data.indexOf(0, q); // language tag
      if (langEnd < 0) continue;
      const transEnd = data.indexOf(0, langEnd + 1); // translated keyword
      if (transEnd < 0) continue;
      q = transEnd + 1;
      const text = compressed ? await inflate(data.subarray(q)) : data.subarray(q);
      out[key] = utf8.decode(text);
    }
  }
  return out;
}

/** Splits 'Key: value, Key: "quoted, value"' into [key, value] pairs; null if it is not such a line. */
function parseFields(line) {
  const out = [];
  const re = /\s*([\w][\w \-/+.]*?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)/gy;
  let m;
  let end = 0;
  while (end < line.length && (m = re.exec(line)) !== null) {
    let v = m[2].trim();
    if (v.startsWith('"')) {
      try { v = JSON.parse(v); } catch { return null; }
    }
    out.push([m[1].trim(), v]);
    end = re.lastIndex;
    if (m[0] === '') break;
  }
  return end >= line.trimEnd().length ? out : null;
}

/**
 * Parses AUTOMATIC1111's parameters text: {prompt, negative_prompt,
 * fields: {Key: value}} (the last line holds the fields when it has at
 * least three "Key: value" pairs).
 */
export function parseParameters(text) {
  const lines = String(text ?? '').replace(/\r\n/g, '\n').trim().split('\n');
  let fields = {};
  const last = parseFields(lines[lines.length - 1] ?? '');
  if (last && last.length >= 3) {
    fields = Object.fromEntries(last);
    lines.pop();
  }
  const prompt = [];
  const negative = [];
  let inNegative = false;
  for (let line of lines) {
    line = line.trim();
    if (!inNegative && line.startsWith('Negative prompt:')) {
      inNegative = true;
      line = line.slice('Negative prompt:'.length).trim();
    }
    (inNegative ? negative : prompt).push(line);
  }
  return { prompt: prompt.join('\n'), negative_prompt: negative.join('\n'), fields };
}

/**
 * Turns parsed parameters into the form's settings. samplers are the
 * server's [{id, label}] (labels as A1111 names them: "DPM++ 2M Karras");
 * models its ids. Returns {settings, skipped: [what could not be used]}.
 */
export function settingsFromParameters(p, { samplers = [], models = [] } = {}) {
  const f = p.fields ?? {};
  const s = { prompt: p.prompt, negative_prompt: p.negative_prompt };
  const skipped = [];
  const int = (v) => (/^\d+$/.test(String(v ?? '').trim()) ? String(Number(v)) : '');
  if (int(f.Steps)) s.steps = int(f.Steps);
  if (f['CFG scale'] !== undefined && Number.isFinite(Number(f['CFG scale']))) s.guidance = String(Number(f['CFG scale']));
  if (int(f.Seed)) s.seed = int(f.Seed);
  const size = /^(\d+)x(\d+)$/.exec(String(f.Size ?? '').trim());
  if (size) {
    const [w, h] = [Number(size[1]), Number(size[2])];
    s.width = String(w);
    s.height = String(h);
    s.size = SIZE_PRESETS.some(([pw, ph]) => pw === w && ph === h) ? `${w}x${h}` : 'custom';
  }
  if (f.Sampler) {
    const schedule = String(f['Schedule type'] ?? 'Automatic');
    const label = schedule === 'Karras' && !/ Karras$/.test(f.Sampler) ? `${f.Sampler} Karras` : f.Sampler;
    const hit = samplers.find((x) => x.label === label || x.id === label);
    if (hit) s.sampler = hit.id;
    else skipped.push(`sampler ${label}`);
  }
  // Hires fix (A1111's txt2img "Hires upscale/resize, Hires steps, Hires
  // upscaler", with the second pass's "Denoising strength").
  const resize = /^(\d+)x(\d+)$/.exec(String(f['Hires resize'] ?? '').trim());
  if (f['Hires upscale'] !== undefined || resize) {
    s.hires = '1';
    s.hires_scale = '2';
    s.hires_width = '';
    s.hires_height = '';
    if (resize) [s.hires_width, s.hires_height] = [String(Number(resize[1])), String(Number(resize[2]))];
    else if (Number(f['Hires upscale']) > 0) s.hires_scale = String(Number(f['Hires upscale']));
    s.hires_steps = int(f['Hires steps']) && f['Hires steps'] !== '0' ? int(f['Hires steps']) : '';
    const d = Number(f['Denoising strength']);
    s.hires_denoise = f['Denoising strength'] !== undefined && d > 0 && d <= 1 ? String(d) : '';
    const up = String(f['Hires upscaler'] ?? 'Latent');
    if (/^latent/i.test(up)) s.hires_upscaler = 'latent';
    else if (/^lanczos$/i.test(up)) s.hires_upscaler = 'lanczos';
    else {
      s.hires_upscaler = 'latent';
      skipped.push(`upscaler ${up}`);
    }
  } else {
    s.hires = '';
  }
  if (f.Model) {
    if (models.includes(f.Model)) s.model = f.Model;
    else skipped.push(`model ${f.Model}`);
  }
  return { settings: s, skipped };
}
