// A small helper for building DOM nodes without HTML strings (user text
// never goes through innerHTML).

/**
 * h('button', {class: 'x', onclick: fn, 'aria-label': 'Close'}, 'text', child)
 * creates an element. Props starting with "on" become listeners, `dataset`
 * is merged, false/null/undefined props and children are skipped.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === false || c === null || c === undefined) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Announces a short message to screen readers (and shows it briefly). */
export function announce(text) {
  const el = document.getElementById('toast');
  if (!el) return;
  el.textContent = '';
  // A fresh text node makes screen readers announce repeats too.
  requestAnimationFrame(() => {
    el.textContent = text;
    el.hidden = false;
    clearTimeout(announce.timer);
    announce.timer = setTimeout(() => { el.hidden = true; }, 2500);
  });
}
