// The jobs panel: the tenant's jobs paged from GET /v1/jobs (newest first),
// kept current by WebSocket events — queue position while waiting (re-read
// from GET /v1/jobs with every metrics event), a
// progress bar with step count, it/s and time left, the latent preview
// updated in place, cancel — and, once done, the images with their
// settings, download, copy seed and "use these settings again", or the
// reason a job failed in plain words.

import { h, announce } from './dom.js';
import {
  progressText, queueText, jobsAhead, failureText, formatDuration, statusRank, isFinal, settingsFromParams, sentence,
} from './format.js';

const PAGE = 12;

/** JobList owns the list of job cards. */
export class JobList {
  /**
   * o: {api, list, more, empty, filter, error, onUse(settings), samplerLabel(id),
   * onSendToInpaint(imageURL, {name, params, seed})}
   */
  constructor(o) {
    this.o = o;
    this.cards = new Map();
    this.fetching = new Map();
    this.images = new Map();
    this.cursor = '';
    this.queueDepth = null;
    this.positionsPending = false;
    this.loading = false;
    o.more.addEventListener('click', () => this.load(false));
    o.filter.addEventListener('change', () => this.load(true));
  }

  /** The status filter ("" for all). */
  get status() {
    return this.o.filter.value;
  }

  /** Loads the first page (reset) or the next one. */
  async load(reset) {
    if (this.loading && !reset) return;
    this.loading = true;
    this.o.more.disabled = true;
    this.o.list.setAttribute('aria-busy', 'true');
    try {
      const page = await this.o.api.jobs({ status: this.status, limit: PAGE, cursor: reset ? '' : this.cursor });
      if (reset) {
        for (const c of this.cards.values()) c.dispose();
        this.cards.clear();
        this.o.list.replaceChildren();
      }
      for (const j of page.jobs) this.upsert(j);
      this.cursor = page.next_cursor ?? '';
      this.o.error.hidden = true;
    } catch (e) {
      this.o.error.textContent = `Could not load your jobs: ${sentence(e.message)}`;
      this.o.error.hidden = false;
    } finally {
      this.loading = false;
      this.o.more.disabled = false;
      this.o.more.hidden = !this.cursor;
      this.o.list.removeAttribute('aria-busy');
      this.updateEmpty();
    }
  }

  /** Merges the newest page (after a reconnect, jobs may have changed). */
  async refreshNewest() {
    try {
      const page = await this.o.api.jobs({ status: this.status, limit: PAGE });
      for (const j of page.jobs) this.upsert(j);
      this.updateEmpty();
    } catch { /* the next reconnect tries again */ }
  }

  updateEmpty() {
    this.o.empty.hidden = this.cards.size > 0;
  }

  /** Ids of jobs still queued or running. */
  activeIds() {
    return [...this.cards.values()].filter((c) => !isFinal(c.job.status)).map((c) => c.job.id);
  }

  /** Adds or updates a job from an API answer. */
  upsert(job) {
    let card = this.cards.get(job.id);
    if (card) {
      card.merge(job);
      return card;
    }
    card = new JobCard(job, this);
    this.cards.set(job.id, card);
    // Ids sort by creation time: keep the list newest first.
    let before = null;
    for (const el of this.o.list.children) {
      if (el.dataset.id < job.id) {
        before = el;
        break;
      }
    }
    this.o.list.insertBefore(card.el, before);
    this.updateEmpty();
    return card;
  }

  /** A job submitted from this page. */
  added(job) {
    if (this.status && this.status !== job.status) {
      this.o.filter.value = '';
      this.load(true);
    }
    return this.upsert(job);
  }

  /** Applies a job event from the WebSocket. */
  onEvent(ev) {
    const card = this.cards.get(ev.job);
    if (card) {
      card.event(ev);
      return;
    }
    if (isFinal(ev.type) && !ev.snapshot && this.status && this.status !== ev.type) return;
    // A job this page has not seen (another tab, another client): fetch it.
    this.fetchJob(ev.job);
  }

  fetchJob(id) {
    if (this.fetching.has(id)) return;
    const p = this.o.api.job(id).then((job) => {
      if (!this.status || this.status === job.status || !isFinal(job.status)) this.upsert(job);
    }).catch(() => {}).finally(() => this.fetching.delete(id));
    this.fetching.set(id, p);
  }

  /** Shows a preview frame on its job. */
  onPreview(frame) {
    this.cards.get(frame.job)?.preview(frame);
  }

  /** The queue depth from the latest metrics event; also re-reads positions. */
  setQueueDepth(d) {
    this.queueDepth = d;
    for (const c of this.cards.values()) if (c.job.status === 'queued') c.renderState();
    this.refreshPositions();
  }

  /**
   * Re-reads the queue positions of the waiting jobs shown (one request for
   * all of them), as jobs ahead start or leave.
   */
  async refreshPositions() {
    if (this.positionsPending || ![...this.cards.values()].some((c) => c.job.status === 'queued')) return;
    this.positionsPending = true;
    try {
      const page = await this.o.api.jobs({ status: 'queued', limit: 100 });
      for (const j of page.jobs) this.cards.get(j.id)?.merge(j);
    } catch { /* the next metrics event tries again */ } finally {
      this.positionsPending = false;
    }
  }

  /** Loads an image (with the key) once; resolves to an object URL. */
  image(url) {
    let p = this.images.get(url);
    if (!p) {
      p = this.o.api.imageBlob(url).then((b) => URL.createObjectURL(b));
      p.catch(() => this.images.delete(url));
      this.images.set(url, p);
    }
    return p;
  }

  /** Forgets cached images (the key changed). */
  clearImages() {
    for (const p of this.images.values()) p.then((u) => URL.revokeObjectURL(u), () => {});
    this.images.clear();
  }
}

/** One job in the list. */
class JobCard {
  constructor(job, list) {
    this.list = list;
    this.job = { ...job };
    this.live = { step: 0, steps: job.params?.steps ?? 0, its: 0 };
    this.previewURL = '';
    this.previewFrames = 0;
    const pid = `job-${job.id}-prompt`;
    this.promptEl = h('p', { class: 'job-prompt', id: pid });
    this.stateEl = h('p', { class: 'job-state' });
    this.progressEl = h('progress', { class: 'job-progress', max: 1, 'aria-label': 'Progress' });
    this.mediaEl = h('div', { class: 'job-media' });
    this.errorEl = h('div', { class: 'job-error', role: 'note', hidden: true });
    this.paramsEl = h('p', { class: 'job-params' });
    this.actionsEl = h('div', { class: 'job-actions' });
    this.metaEl = h('p', { class: 'job-meta' });
    this.el = h('li', { class: 'job', dataset: { id: job.id }, 'aria-labelledby': pid },
      this.mediaEl,
      h('div', { class: 'job-body' }, this.promptEl, this.stateEl, this.progressEl, this.errorEl, this.paramsEl,
        this.metaEl, this.actionsEl));
    this.render();
  }

  dispose() {
    if (this.previewURL) URL.revokeObjectURL(this.previewURL);
  }

  /** Merges a newer view of the job (never moving it back in its life). */
  merge(job) {
    if (statusRank(job.status) < statusRank(this.job.status)) return;
    if (isFinal(this.job.status) && job.status !== this.job.status) return; // final is final
    const was = this.job.status;
    this.job = { ...this.job, ...job };
    if (was !== job.status || job.status === 'queued') this.render();
  }

  event(ev) {
    const j = this.job;
    if (isFinal(j.status)) return; // a final state never changes
    const rank = statusRank(ev.type === 'progress' || ev.type === 'started' ? 'running' : ev.type);
    if (rank >= 0 && rank < statusRank(j.status)) return; // late news
    switch (ev.type) {
      case 'queued':
        j.status = 'queued';
        if (ev.position !== undefined) j.position = ev.position;
        if (ev.adjustments) j.adjustments = ev.adjustments;
        this.render();
        break;
      case 'started':
        j.status = 'running';
        j.started_at = j.started_at ?? ev.time;
        j.attempts = ev.attempt ?? j.attempts;
        if (ev.steps) this.live.steps = ev.steps;
        if (!ev.snapshot) this.live.step = 0;
        this.render();
        break;
      case 'progress':
        if (j.status !== 'running') {
          j.status = 'running';
          this.render();
        }
        this.live = { step: ev.step ?? 0, steps: ev.steps ?? this.live.steps, its: ev.its ?? 0 };
        this.renderProgress();
        break;
      case 'succeeded':
        j.status = 'succeeded';
        j.images = ev.images ?? j.images ?? [];
        j.finished_at = j.finished_at ?? ev.time;
        if (ev.duration_s) j.duration_s = ev.duration_s;
        this.render();
        if (!ev.snapshot) announce(`Done: ${j.params?.prompt ?? 'image'}`);
        break;
      case 'failed':
        j.status = 'failed';
        j.error = ev.error ?? j.error;
        j.finished_at = j.finished_at ?? ev.time;
        this.render();
        if (!ev.snapshot) announce(`Failed: ${j.params?.prompt ?? 'job'}`);
        break;
      case 'canceled':
        j.status = 'canceled';
        j.finished_at = j.finished_at ?? ev.time;
        this.render();
        break;
      default:
    }
  }

  /** Shows a latent preview frame in place. */
  preview(frame) {
    if (isFinal(this.job.status)) return;
    const img = this.mediaEl.querySelector('.preview img');
    if (!img) return;
    const url = URL.createObjectURL(new Blob([frame.jpeg], { type: 'image/jpeg' }));
    const old = this.previewURL;
    this.previewURL = url;
    this.previewFrames++;
    img.onload = () => {
      if (old) URL.revokeObjectURL(old);
      img.hidden = false;
      img.closest('.preview').classList.add('has-frame');
    };
    img.src = url;
    img.alt = `Preview at step ${frame.step} of ${frame.steps}`;
    img.dataset.step = String(frame.step);
    if (frame.step > this.live.step) {
      this.live = { ...this.live, step: frame.step, steps: frame.steps };
      this.renderProgress();
    }
  }

  render() {
    const j = this.job;
    const p = j.params ?? {};
    this.el.dataset.status = j.status;
    this.promptEl.textContent = p.prompt ?? '';
    this.promptEl.title = p.prompt ?? '';
    this.renderParams();
    this.renderMedia();
    this.renderState();
    this.renderProgress();
    this.renderError();
    this.renderActions();
    this.renderMeta();
  }

  renderParams() {
    const p = this.job.params ?? {};
    const label = this.list.o.samplerLabel(p.sampler);
    const bits = [p.model, p.width && `${p.width} × ${p.height}`, p.steps && `${p.steps} steps`, label,
      p.guidance !== undefined && `guidance ${p.guidance}`, p.seed !== undefined && `seed ${p.seed}`,
      p.n > 1 && `${p.n} images`, p.profile && `profile ${p.profile}`, editLabel(p), hiresLabel(p.hires)].filter(Boolean);
    this.paramsEl.replaceChildren(bits.join(' · '));
    if (p.negative_prompt) {
      this.paramsEl.append(h('br'), h('span', { class: 'neg' }, `Negative: ${p.negative_prompt}`));
    }
  }

  renderMedia() {
    const j = this.job;
    const p = j.params ?? {};
    if (j.status === 'succeeded') {
      this.mediaEl.replaceChildren(...(j.images ?? []).map((im, i) => this.figure(im, i)));
      if (this.previewURL) {
        URL.revokeObjectURL(this.previewURL);
        this.previewURL = '';
      }
      return;
    }
    let fig = this.mediaEl.querySelector('.preview');
    if (!fig) {
      const ratio = p.width && p.height ? `${p.width} / ${p.height}` : '1';
      fig = h('figure', { class: 'preview' },
        h('img', { alt: 'Preview', hidden: true, decoding: 'async' }),
        h('figcaption', { class: 'preview-note' }));
      fig.style.aspectRatio = ratio; // CSSOM: allowed by the style-src 'self' policy
      this.mediaEl.replaceChildren(fig);
    }
    const note = fig.querySelector('.preview-note');
    note.textContent = {
      queued: 'Waiting…', running: 'The preview appears here', failed: 'No image', canceled: 'Canceled',
    }[j.status] ?? '';
    fig.classList.toggle('is-stopped', j.status === 'failed' || j.status === 'canceled');
  }

  figure(im, i) {
    const p = this.job.params ?? {};
    const img = h('img', {
      alt: `${p.prompt ?? 'Generated image'} (seed ${im.seed})`, width: im.width, height: im.height, decoding: 'async',
      dataset: { imageId: im.id },
    });
    const name = `kiln-${this.job.id}-${i}-seed${im.seed}.png`;
    const dl = h('a', { class: 'link', download: name, 'aria-disabled': 'true' }, 'Download');
    const copy = h('button', {
      type: 'button', class: 'link', onclick: () => copyText(String(im.seed), `Seed ${im.seed} copied`),
      'aria-label': `Copy seed ${im.seed}`,
    }, 'Copy seed');
    const inpaint = h('button', {
      type: 'button', class: 'link', disabled: true, 'aria-label': `Send image with seed ${im.seed} to inpaint`,
    }, 'Send to inpaint');
    const fig = h('figure', { class: 'result' }, h('div', { class: 'result-frame' }, img),
      h('figcaption', {}, h('span', { class: 'seed' }, `Seed ${im.seed}`), h('span', { class: 'result-actions' }, copy, dl, inpaint)));
    this.list.image(im.url).then((url) => {
      img.src = url;
      dl.href = url;
      dl.removeAttribute('aria-disabled');
      inpaint.disabled = false;
      inpaint.onclick = () => {
        this.list.o.onSendToInpaint?.(im.url, { name, params: p, seed: im.seed })
          .catch((e) => announce(`Could not send the image: ${sentence(e.message)}`));
      };
    }).catch((e) => {
      fig.querySelector('.result-frame').replaceChildren(h('p', { class: 'job-error' }, `The image could not be loaded: ${sentence(e.message)}`));
    });
    return fig;
  }

  renderState() {
    const j = this.job;
    let text = '';
    switch (j.status) {
      case 'queued':
        text = queueText(jobsAhead(j.position, this.list.queueDepth));
        break;
      case 'running':
        text = j.cancel_requested ? 'Canceling — stops after the current step' : progressText(this.live.step, this.live.steps, this.live.its);
        if (!j.cancel_requested && this.live.step === 0) text = j.attempts > 1 ? `Starting again (attempt ${j.attempts})…` : 'Starting…';
        break;
      case 'succeeded': {
        const d = duration(j);
        text = d ? `Done in ${d}` : 'Done';
        break;
      }
      case 'failed':
        text = 'Failed';
        break;
      case 'canceled':
        text = j.started_at ? 'Canceled' : 'Canceled before it started';
        break;
      default:
        text = j.status;
    }
    this.stateEl.textContent = text;
  }

  renderProgress() {
    const j = this.job;
    const pr = this.progressEl;
    if (j.status !== 'running') {
      pr.hidden = true;
      return;
    }
    pr.hidden = false;
    const { step, steps } = this.live;
    if (steps > 0 && step > 0) {
      pr.max = steps;
      pr.value = Math.min(step, steps);
      pr.setAttribute('aria-valuetext', `step ${step} of ${steps}`);
    } else {
      pr.removeAttribute('value'); // indeterminate until the first step
      pr.removeAttribute('aria-valuetext');
    }
    this.renderState();
  }

  renderError() {
    const j = this.job;
    if (j.status !== 'failed') {
      this.errorEl.hidden = true;
      return;
    }
    const { summary, detail } = failureText(j.error);
    this.errorEl.replaceChildren(h('strong', {}, summary),
      detail ? h('details', { class: 'detail' }, h('summary', {}, 'Technical details'), h('p', {}, detail)) : '');
    this.errorEl.hidden = false;
  }

  renderActions() {
    const j = this.job;
    const buttons = [];
    if (!isFinal(j.status)) {
      buttons.push(h('button', {
        type: 'button', class: 'small danger', disabled: !!j.cancel_requested, onclick: (e) => this.cancel(e.currentTarget),
        'aria-label': `Cancel job: ${j.params?.prompt ?? ''}`,
      }, j.cancel_requested ? 'Canceling…' : 'Cancel'));
    }
    // The job's seed reproduces all of its images (image i uses seed + i).
    buttons.push(h('button', {
      type: 'button', class: 'small', onclick: () => this.list.o.onUse(settingsFromParams(j.params ?? {}, j.params?.seed)),
    }, 'Use these settings again'));
    this.actionsEl.replaceChildren(...buttons);
    this.actionsEl.hidden = buttons.length === 0;
  }

  renderMeta() {
    const j = this.job;
    const t = j.created_at ? new Date(j.created_at) : null;
    const adj = (j.adjustments ?? []).map((a) => `${a.field} ${a.from}→${a.to}`).join(', ');
    this.metaEl.replaceChildren(t ? h('time', { datetime: j.created_at, title: t.toString() }, t.toLocaleString()) : '',
      adj ? h('span', { class: 'job-adjusted', title: j.adjustments[0].reason ?? '' }, ` · adjusted under load: ${adj}`) : '');
  }

  async cancel(button) {
    button.disabled = true;
    button.textContent = 'Canceling…';
    try {
      const job = await this.list.o.api.cancel(this.job.id);
      this.merge(job);
      this.renderState();
      this.renderActions();
      announce(job.status === 'canceled' ? 'Job canceled' : 'Canceling the job');
    } catch (e) {
      if (e.status === 409 || e.status === 404) {
        // It finished meanwhile: show how.
        try {
          this.merge(await this.list.o.api.job(this.job.id));
        } catch { /* gone */ }
      } else {
        announce(`Could not cancel: ${sentence(e.message)}`);
      }
      this.renderActions();
    }
  }
}

/** "inpaint", "outpaint ←64 →64", "img2img 0.6" for a job that edits an image; "" otherwise. */
function editLabel(p) {
  if (!p.init_image) return '';
  const strength = p.strength ? ` ${p.strength}` : '';
  if (p.mask) return `inpaint${strength}`;
  if (p.outpaint) {
    const o = p.outpaint;
    const sides = [['←', o.left], ['→', o.right], ['↑', o.top], ['↓', o.bottom]].filter(([, v]) => v).map(([a, v]) => `${a}${v}`);
    return `outpaint ${sides.join(' ')}`;
  }
  return `img2img${strength}`;
}

/** "hires ×2 latent" / "hires 1024 × 1024 lanczos"; "" without hires. */
function hiresLabel(hr) {
  if (!hr) return '';
  const size = hr.scale ? `×${hr.scale}` : `${hr.width} × ${hr.height}`;
  return `hires ${size}${hr.upscaler ? ` ${hr.upscaler}` : ''}`;
}

function duration(j) {
  if (j.duration_s) return formatDuration(j.duration_s);
  if (j.started_at && j.finished_at) return formatDuration((Date.parse(j.finished_at) - Date.parse(j.started_at)) / 1000);
  return '';
}

/** Copies text to the clipboard (with a fallback for older browsers). */
async function copyText(text, done) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const ta = h('textarea', { class: 'visually-hidden', readonly: true }, text);
    document.body.append(ta);
    ta.select();
    document.execCommand('copy');
    ta.remove();
  }
  announce(done);
}
