// Usage per day as bars: input and output tokens side by side, drawn in
// SVG (no chart library to fetch, nothing third-party to trust).

import { h } from './dom.js';
import { tokens } from './format.js';

// the month's days so far, and the rest of the month empty, so that a
// bar is as wide on the 2nd as on the 30th
function wholeMonth(days) {
  if (!days.length) return days;
  const [y, m] = days[0].date.split('-').map(Number);
  const n = new Date(Date.UTC(y, m, 0)).getUTCDate();
  const out = days.slice();
  for (let d = days.length + 1; d <= n; d++) {
    out.push({ date: `${days[0].date.slice(0, 8)}${String(d).padStart(2, '0')}`, usage: null });
  }
  return out;
}

export function dailyChart(shown) {
  const days = wholeMonth(shown);
  const W = 720, H = 220, L = 44, B = 22, T = 8;
  const max = Math.max(1, ...shown.map(d => Math.max(d.usage.input_tokens, d.usage.output_tokens)));
  const step = (W - L) / Math.max(1, days.length);
  const bw = Math.max(1, step * 0.38);
  const y = v => T + (H - B - T) * (1 - v / max);
  const nodes = [];

  for (const f of max > 1 ? [0, 0.5, 1] : [0]) {
    const v = Math.round(max * f);
    nodes.push(h('svg:line', { class: 'grid-line', x1: L, x2: W, y1: y(v), y2: y(v) }));
    nodes.push(h('svg:text', { class: 'axis', x: L - 6, y: y(v) + 3, 'text-anchor': 'end' }, tokens(v)));
  }

  days.forEach((d, i) => {
    const x = L + i * step + step * 0.1;
    const u = d.usage || { input_tokens: 0, output_tokens: 0 };
    for (const [cls, v, dx] of [['in', u.input_tokens, 0], ['out', u.output_tokens, bw]]) {
      if (!v) continue;
      nodes.push(h('svg:rect', { class: cls, x: x + dx, y: y(v), width: bw, height: H - B - y(v) },
        h('svg:title', null, `${d.date}: ${tokens(v)} ${cls === 'in' ? 'input' : 'output'} tokens`)));
    }
    const label = d.date.slice(8);
    if (days.length <= 16 || i % 3 === 0 || i === days.length - 1) {
      nodes.push(h('svg:text', { class: 'axis', x: x + bw, y: H - 6, 'text-anchor': 'middle' }, label));
    }
  });

  const total = shown.reduce((a, d) => a + d.usage.input_tokens + d.usage.output_tokens, 0);
  return h('div', { class: 'chart' },
    h('svg:svg', { viewBox: `0 0 ${W} ${H}`, role: 'img',
                   'aria-label': `Tokens per day this month: ${tokens(total)} in all` }, nodes),
    h('div', { class: 'legend' },
      h('span', null, h('span', { class: 'sw' }), 'Input tokens'),
      h('span', null, h('span', { class: 'sw out' }), 'Output tokens')));
}
