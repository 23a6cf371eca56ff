// The caller's AI spend from GET /api/analytics/usage, as an inline SVG bar chart
// and a table with every figure.

import { $, h, s } from './dom.js';

const METRICS = {
  cost_usd: { label: 'cost (USD)', value: (i) => i.cost_usd, format: (v) => `$${v.toFixed(v < 1 ? 4 : 2)}` },
  requests: { label: 'requests', value: (i) => i.requests, format: (v) => v.toLocaleString() },
  tokens: { label: 'tokens', value: (i) => i.prompt_tokens + i.completion_tokens, format: (v) => v.toLocaleString() },
  p50_latency_ms: { label: 'p50 latency', value: (i) => i.p50_latency_ms, format: (v) => `${Math.round(v)} ms` },
};

/** The last `days` days up to now (as the agents count "the last 7 days"). */
function period(days) {
  const end = new Date();
  const start = new Date(end.getTime() - days * 86400000);
  return { from: start.toISOString(), to: end.toISOString() };
}

export function barChart(items, metric) {
  const { value, format, label } = METRICS[metric];
  const row = 30;
  const labelWidth = 170;
  const width = 720;
  const barSpace = width - labelWidth - 110;
  const top = Math.max(...items.map(value), 0) || 1;
  const height = items.length * row + 10;
  return s('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `${label} per ${items.groupBy}` },
    items.map((item, n) => {
      const v = value(item);
      const y = n * row + 5;
      const w = Math.max(2, (v / top) * barSpace);
      return s('g', { class: 'bar', 'data-key': item.key },
        s('title', {}, `${item.key}: ${format(v)}`),
        s('text', { class: 'bar-label', x: labelWidth - 10, y: y + row / 2, 'text-anchor': 'end', 'dominant-baseline': 'central' }, item.key),
        s('rect', { x: labelWidth, y: y + 4, width: w, height: row - 8, rx: 4 }),
        s('text', { class: 'bar-value', x: labelWidth + w + 8, y: y + row / 2, 'dominant-baseline': 'central' }, format(v)));
    }));
}

function table(items) {
  const money = METRICS.cost_usd.format;
  return h('table', { class: 'usage-table' },
    h('thead', {}, h('tr', {}, ['', 'requests', 'prompt tokens', 'completion tokens', 'cost', 'p50 latency'].map((t) => h('th', {}, t)))),
    h('tbody', {}, items.map((i) => h('tr', {},
      h('th', { scope: 'row' }, i.key), h('td', {}, i.requests.toLocaleString()),
      h('td', {}, i.prompt_tokens.toLocaleString()), h('td', {}, i.completion_tokens.toLocaleString()),
      h('td', {}, money(i.cost_usd)), h('td', {}, `${Math.round(i.p50_latency_ms)} ms`)))));
}

export class UsagePanel {
  constructor(session) {
    this.session = session;
    this.body = $('usage-body');
    for (const id of ['usage-range', 'usage-group']) $(id).addEventListener('change', () => this.load());
    $('usage-metric').addEventListener('change', () => this.draw());
  }

  async load() {
    const days = Number($('usage-range').value);
    const groupBy = $('usage-group').value;
    const { from, to } = period(days);
    this.body.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    try {
      const answer = await this.session.api(`/api/analytics/usage?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}&group_by=${groupBy}`);
      const items = [...answer.items];
      if (groupBy === 'day') items.sort((a, b) => String(a.key).localeCompare(String(b.key)));
      else items.sort((a, b) => b.cost_usd - a.cost_usd);
      items.groupBy = groupBy;
      this.items = items;
      this.draw();
    } catch (error) {
      this.items = null;
      this.body.replaceChildren(h('p', { class: 'failure' }, `Usage is not available: ${error.message}`));
    }
  }

  draw() {
    if (!this.items) return;
    const items = this.items;
    if (!items.length) {
      this.body.replaceChildren(h('p', { class: 'muted' }, 'No usage recorded in this period.'));
      return;
    }
    const total = items.reduce((sum, i) => sum + i.cost_usd, 0);
    const requests = items.reduce((sum, i) => sum + i.requests, 0);
    this.body.replaceChildren(
      h('div', { class: 'totals' },
        h('div', { class: 'total' }, h('span', { class: 'muted' }, 'spent'), h('strong', {}, METRICS.cost_usd.format(total))),
        h('div', { class: 'total' }, h('span', { class: 'muted' }, 'requests'), h('strong', {}, requests.toLocaleString()))),
      h('div', { class: 'card chart-card' }, barChart(items, $('usage-metric').value)),
      table(items));
  }
}
