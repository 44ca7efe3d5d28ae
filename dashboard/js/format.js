// Numbers as people read them: 1.2M tokens, $0.0042, 32K context.

export function tokens(n) {
  n = Number(n) || 0;
  const abs = Math.abs(n);
  if (abs < 1000) return String(n);
  for (const [d, s] of [[1e9, 'B'], [1e6, 'M'], [1e3, 'K']]) {
    if (abs >= d) {
      const v = n / d;
      return (v >= 100 ? Math.round(v) : Math.round(v * 10) / 10) + s;
    }
  }
  return String(n);
}

// a plan's quota: 100K, 2M, 15M (no decimal point when whole)
export const quota = n => n === null || n === undefined ? 'unlimited' : tokens(n);

export function usd(v) {
  v = Number(v) || 0;
  if (v === 0) return '$0';
  if (v >= 1) return '$' + v.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  if (v >= 0.01) return '$' + v.toFixed(2);
  // two significant digits, never in exponent form
  const digits = Math.max(2, 1 - Math.floor(Math.log10(v)));
  return '$' + v.toFixed(Math.min(digits, 12)).replace(/(\.\d*?[1-9])0+$/, '$1');
}

// USD per token (OpenRouter's pricing strings) to USD per 1M tokens
export function perMillion(perToken) {
  const v = Number(perToken) * 1e6;
  if (!v) return 'Free';
  return '$' + (Math.round(v * 1e6) / 1e6).toFixed(2);
}

export const count = n => (Number(n) || 0).toLocaleString('en-US');

export function percent(used, limit) {
  if (!limit) return 0;
  return Math.min(100, Math.max(0, used * 100 / limit));
}

// unix seconds or an ISO string to "2026-12-04 17:22"
export function when(t) {
  if (t === null || t === undefined || t === '') return '—';
  const d = typeof t === 'number' ? new Date(t * 1000) : new Date(t);
  if (isNaN(d)) return String(t);
  const p = n => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

// "in 26 days", "in 5 hours"
export function until(iso) {
  const ms = new Date(iso) - Date.now();
  if (isNaN(ms)) return '—';
  const h = ms / 3600e3;
  if (h >= 48) return `in ${Math.round(h / 24)} days`;
  if (h >= 1) return `in ${Math.round(h)} hours`;
  return `in ${Math.max(1, Math.round(ms / 60e3))} minutes`;
}

export const ms = v => v === null || v === undefined ? '—' : `${count(v)} ms`;
