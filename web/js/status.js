// The status panel: queue depth, workers and, per GPU, memory, utilisation
// and temperature as numbers and a small chart of the recent `metrics`
// events; "CPU" when the server has no GPU.

import { h } from './dom.js';
import { formatBytes } from './format.js';

const HISTORY = 60; // samples kept per GPU (two minutes at the default 2 s)
const SVG = 'http://www.w3.org/2000/svg';

/** StatusPanel renders metrics events into its root element. */
export class StatusPanel {
  constructor(root) {
    this.root = root;
    this.queueEl = root.querySelector('#queue-depth');
    this.runningEl = root.querySelector('#running');
    this.workersEl = root.querySelector('#workers');
    this.gpusEl = root.querySelector('#gpus');
    this.history = new Map();
    this.charts = new Map();
  }

  /** Applies a metrics event (or GET /v1/status). */
  update(m) {
    this.root.classList.remove('is-stale');
    this.queueEl.textContent = String(m.queue_depth ?? 0);
    this.runningEl.textContent = String(m.running ?? 0);
    const workers = m.workers ?? [];
    const busy = workers.filter((w) => w.busy).length;
    const devices = [...new Set(workers.map((w) => (w.device || 'cpu').toUpperCase()))];
    this.workersEl.textContent = workers.length
      ? `${workers.length} (${busy} busy) on ${devices.join(', ')}`
      : 'none connected';
    const gpus = m.gpus ?? [];
    if (gpus.length === 0) {
      if (!this.gpusEl.querySelector('.cpu-only')) {
        this.charts.clear();
        this.gpusEl.replaceChildren(h('p', { class: 'cpu-only' }, h('span', { class: 'chip' }, 'CPU'),
          ' No GPU: images are made on the processor.'));
      }
      return;
    }
    this.gpusEl.querySelector('.cpu-only')?.remove();
    const seen = new Set();
    for (const g of gpus) {
      const key = `${g.index}:${g.name}`;
      seen.add(key);
      const hist = this.history.get(key) ?? [];
      hist.push({
        util: clamp01(g.utilization) * 100,
        mem: g.memory_total > 0 ? (g.memory_used / g.memory_total) * 100 : 0,
        temp: Math.max(0, Math.min(100, g.temperature_c ?? 0)),
      });
      if (hist.length > HISTORY) hist.shift();
      this.history.set(key, hist);
      let chart = this.charts.get(key);
      if (!chart) {
        chart = new GpuChart(g);
        this.charts.set(key, chart);
        this.gpusEl.append(chart.el);
      }
      chart.update(g, hist);
    }
    for (const [key, chart] of this.charts) {
      if (!seen.has(key)) {
        chart.el.remove();
        this.charts.delete(key);
        this.history.delete(key);
      }
    }
  }

  /** Marks the numbers as old while the connection is down. */
  stale() {
    this.root.classList.add('is-stale');
  }
}

function clamp01(v) {
  return Math.max(0, Math.min(1, Number(v) || 0));
}

/** One GPU's numbers and chart. */
class GpuChart {
  constructor(g) {
    this.title = h('h3', { class: 'gpu-name' });
    this.values = h('dl', { class: 'gpu-values' });
    this.svg = document.createElementNS(SVG, 'svg');
    this.svg.setAttribute('viewBox', `0 0 ${HISTORY - 1} 100`);
    this.svg.setAttribute('preserveAspectRatio', 'none');
    this.svg.setAttribute('role', 'img');
    this.svg.classList.add('chart');
    this.lines = {};
    for (const k of ['mem', 'util', 'temp']) {
      const pl = document.createElementNS(SVG, 'polyline');
      pl.setAttribute('class', `line ${k}`);
      pl.setAttribute('vector-effect', 'non-scaling-stroke');
      this.svg.append(pl);
      this.lines[k] = pl;
    }
    this.el = h('div', { class: 'gpu' }, this.title, this.svg,
      h('p', { class: 'legend', 'aria-hidden': 'true' },
        h('span', { class: 'key util' }, 'utilisation'), h('span', { class: 'key mem' }, 'memory'),
        h('span', { class: 'key temp' }, 'temperature (°C)')),
      this.values);
    this.title.textContent = `GPU ${g.index}: ${g.name}`;
  }

  update(g, hist) {
    const util = Math.round(clamp01(g.utilization) * 100);
    const rows = [
      ['Utilisation', `${util}%`],
      ['Memory', `${formatBytes(g.memory_used)} of ${formatBytes(g.memory_total)}`],
      ['Temperature', `${Math.round(g.temperature_c ?? 0)} °C`],
    ];
    if (g.power_w > 0) rows.push(['Power', `${Math.round(g.power_w)} W`]);
    this.values.replaceChildren(...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
    const offset = HISTORY - hist.length;
    for (const k of ['mem', 'util', 'temp']) {
      this.lines[k].setAttribute('points', hist.map((s, i) => `${offset + i},${(100 - s[k]).toFixed(1)}`).join(' '));
    }
    this.svg.setAttribute('aria-label', `GPU ${g.index} over the last ${hist.length} readings: ` +
      `utilisation ${util}%, memory ${Math.round(hist.at(-1).mem)}% used, ${Math.round(g.temperature_c ?? 0)} °C`);
  }
}
