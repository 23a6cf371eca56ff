// Building DOM nodes without innerHTML: text always goes in as text.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** h('p', {class: 'x'}, 'text', child…) */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** The same for SVG elements. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export const $ = (id) => document.getElementById(id);

let noticeTimer;

/** A short message at the bottom of the page; errors stay until dismissed or replaced. */
export function notify(text, { error = false } = {}) {
  const box = $('notice');
  box.replaceChildren(h('span', {}, text),
    h('button', { class: 'ghost', type: 'button', 'aria-label': 'Dismiss', onclick: () => { box.hidden = true; } }, '×'));
  box.classList.toggle('is-error', error);
  box.hidden = false;
  clearTimeout(noticeTimer);
  if (!error) noticeTimer = setTimeout(() => { box.hidden = true; }, 4000);
}
