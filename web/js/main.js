// Entry point of the web client: finds out whether the server wants a key,
// loads the menus, the job history and the status, opens the event stream
// and wires the generate form to POST /v1/jobs.

import { Api } from './api.js';
import { Auth } from './auth.js';
import { announce } from './dom.js';
import { insertExtraNetwork, submitErrorText, sentence, settingsFromParams } from './format.js';
import { JobList } from './jobs.js';
import { LiveSocket } from './live.js';
import { ImageEditor } from './editor.js';
import { decodePreview } from './preview.js';
import { SettingsForm } from './settings.js';
import { StatusPanel } from './status.js';

const $ = (id) => document.getElementById(id);

const auth = new Auth($('key-dialog'));
const api = new Api(() => auth.key);
let samplerLabels = new Map();

const editor = new ImageEditor($('edit'), { onChange: () => settings?.refreshProfile() });
const settings = new SettingsForm($('generate'), { onSubmit: submit, imageSize: () => editor.defaultSize() });
const status = new StatusPanel($('status'));
const jobs = new JobList({
  api, list: $('jobs'), more: $('more'), empty: $('jobs-empty'), filter: $('filter'), error: $('jobs-error'),
  onUse: (s) => {
    settings.apply(s);
    announce('Settings loaded into the form');
  },
  samplerLabel: (id) => samplerLabels.get(id) ?? id,
  onSendToInpaint: sendToInpaint,
});

/**
 * "Send to inpaint": a finished image becomes the init image, its job's
 * settings fill the form (the size follows the image), and the mask
 * tools open.
 */
async function sendToInpaint(url, { name, params, seed }) {
  const blob = await api.imageBlob(url);
  settings.apply({ ...settingsFromParams(params, seed), size: 'default', hires: '' });
  await editor.load(blob, name, 'inpaint');
  $('edit').scrollIntoView({ block: 'start', behavior: 'smooth' });
  $('edit-mode').focus();
  announce('Image sent to inpaint: paint over what should change');
}

const live = new LiveSocket({
  url: () => `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws?subscribe=all`,
  protocols: () => (auth.key ? ['kiln.v1', `kiln.bearer.${auth.key}`] : ['kiln.v1']),
  activeJobs: () => jobs.activeIds(),
  onMessage,
  onPreview: (buf) => {
    try {
      jobs.onPreview(decodePreview(buf));
    } catch { /* not a preview frame: ignore */ }
  },
  onState,
});

let reauthing = null;
let countdown = 0;
let bannerShown = false;

function onMessage(m) {
  switch (m.type) {
    case 'metrics':
      status.update(m);
      jobs.setQueueDepth(m.queue_depth);
      break;
    case 'queued': case 'started': case 'progress': case 'succeeded': case 'failed': case 'canceled':
      jobs.onEvent(m);
      break;
    case 'error':
      if (m.error?.code !== 'not_found') console.warn('kiln: event stream error', m.error);
      break;
    default: // hello, subscribed, pong
  }
}

function onState(s) {
  const pill = $('conn');
  clearInterval(countdown);
  if (s.state === 'open') {
    pill.dataset.state = 'open';
    pill.textContent = 'Live';
    if (bannerShown) {
      bannerShown = false;
      $('banner').hidden = true;
      announce('Reconnected');
      jobs.refreshNewest();
    }
    return;
  }
  if (s.state === 'connecting') {
    pill.dataset.state = 'connecting';
    pill.textContent = 'Connecting…';
    return;
  }
  // Down.
  pill.dataset.state = 'down';
  pill.textContent = 'Offline';
  status.stale();
  if (s.failures >= 2 || s.wasOpen || s.everOpen) showBanner(s.retryInMs);
  // A connection that never opens may be a refused key: ask the API.
  if (!s.wasOpen && s.failures >= 2 && auth.key) {
    api.account().catch((e) => {
      if (e.status === 401) reauth('Your API key is no longer accepted.');
    });
  }
}

function showBanner(retryInMs) {
  bannerShown = true;
  const until = Date.now() + retryInMs;
  const text = $('banner-text');
  const tick = () => {
    const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    text.textContent = left > 0
      ? `Connection to the server lost. Reconnecting in ${left} s…`
      : 'Connection to the server lost. Reconnecting…';
  };
  tick();
  countdown = setInterval(tick, 1000);
  $('banner').hidden = false;
}

async function submit() {
  const formError = $('form-error');
  formError.hidden = true;
  const editProblem = editor.check();
  const req = settings.request();
  if (!req || editProblem) return;
  const button = $('submit');
  button.disabled = true;
  button.textContent = 'Sending…';
  try {
    Object.assign(req, await editor.request());
    if (req.outpaint) {
      // The server sizes the outpainted canvas itself.
      delete req.width;
      delete req.height;
    }
    const job = await api.submit(req);
    jobs.added(job);
    live.subscribe([job.id]);
    announce('Job queued');
  } catch (e) {
    if (e.status === 401) {
      reauth('The server asks for an API key.');
    } else if (!(e.field && (settings.showError(e.field, submitErrorText(e)) || editor.showError(e.field, submitErrorText(e))))) {
      formError.textContent = submitErrorText(e);
      formError.hidden = false;
    }
  } finally {
    button.disabled = false;
    button.textContent = 'Generate';
  }
}

/** Asks for a key (again) and restarts everything with it. */
function reauth(note) {
  if (reauthing) return reauthing;
  auth.forget();
  live.stop();
  jobs.clearImages();
  $('conn').dataset.state = 'connecting';
  $('conn').textContent = 'Waiting for a key';
  reauthing = auth.ask(note).then((account) => start(account)).finally(() => {
    reauthing = null;
  });
  return reauthing;
}

function showAccount(account) {
  const who = $('who');
  who.textContent = account.keyless ? 'Local (no key needed)' : `Tenant ${account.tenant}`;
  $('forget-key').hidden = !auth.key;
}

// setupExtraNetworks fills the LoRA/embedding picker (hidden when none is
// installed); choosing one inserts its prompt syntax at the caret.
async function setupExtraNetworks() {
  const [loras, embs] = await Promise.all([api.loras().catch(() => ({})), api.embeddings().catch(() => ({}))]);
  const pick = $('extra-pick');
  pick.replaceChildren(pick.options[0]);
  for (const [kind, label, list] of [['lora', 'LoRAs', loras.data ?? []], ['embedding', 'Embeddings', embs.data ?? []]]) {
    if (list.length === 0) continue;
    const group = document.createElement('optgroup');
    group.label = label;
    for (const e of list) group.append(new Option(e.name, `${kind}:${e.name}`));
    pick.append(group);
  }
  $('extra-field').hidden = pick.length === 1;
  pick.onchange = () => {
    const [kind, ...rest] = pick.value.split(':');
    if (!kind) return;
    const prompt = $('prompt');
    const r = insertExtraNetwork(prompt.value, prompt.selectionStart, kind, rest.join(':'));
    prompt.value = r.text;
    prompt.dispatchEvent(new Event('input', { bubbles: true }));
    prompt.focus();
    prompt.setSelectionRange(r.caret, r.caret);
    pick.value = '';
  };
}

async function start(account) {
  showAccount(account);
  const [models, profiles, samplers, st] = await Promise.all([api.models(), api.profiles(), api.samplers(), api.status()]);
  samplerLabels = new Map((samplers.data ?? []).map((s) => [s.id, s.label]));
  settings.setOptions({ account, models, profiles, samplers });
  await setupExtraNetworks();
  status.update(st);
  jobs.setQueueDepth(st.queue_depth);
  await jobs.load(true);
  live.start();
  document.body.dataset.ready = 'true';
}

async function boot() {
  $('banner-retry').addEventListener('click', () => live.retryNow());
  $('forget-key').addEventListener('click', () => {
    auth.forget();
    location.reload();
  });
  const hadKey = !!auth.key;
  for (;;) {
    try {
      const account = await api.account();
      await start(account);
      return;
    } catch (e) {
      if (e.status === 401) {
        await reauth(hadKey ? 'The saved key is no longer accepted.' : '');
        return;
      }
      $('banner-text').textContent = `Kiln could not be reached: ${sentence(e.message)} Retrying…`;
      $('banner').hidden = false;
      bannerShown = true;
      await new Promise((r) => setTimeout(r, 3000));
    }
  }
}

boot();
