// The account holder's pages: overview, keys, activity.  Signed in with
// the management key (nbm-...), or read-only with an API key (nb-...):
// that one sees its own usage on the overview, and Quickstart.

import { h, clear, table, secretBox, errorBox, notice, onSubmit } from './dom.js';
import * as f from './format.js';
import { get, post, patch, del, enc, session, rememberKey, publicCatalog } from './api.js';
import { dailyChart } from './chart.js';

function meter(label, used, limit, cls) {
  const pct = f.percent(used, limit);
  const fill = h('div', { class: `fill ${cls || ''} ${pct >= 100 ? 'full' : ''}` });
  fill.style.width = `${limit ? pct : 0}%`;
  return h('div', { class: 'meter' },
    h('div', { class: 'row' },
      h('span', null, label),
      h('span', { class: 'muted' }, limit ? `${f.tokens(used)} of ${f.tokens(limit)} (${pct > 0 && pct < 1 ? 'under 1' : Math.floor(pct)}%)`
                                          : `${f.tokens(used)}, no limit`)),
    h('div', { class: 'track', role: 'progressbar', 'aria-label': label, 'aria-valuemin': 0,
               'aria-valuemax': 100, 'aria-valuenow': Math.floor(pct) }, fill));
}

function stat(label, value, extra) {
  return h('div', { class: 'panel stat' }, h('div', { class: 'label' }, label),
           h('div', { class: 'value' }, value), extra ? h('div', { class: 'muted' }, extra) : null);
}

const usageColumns = first => [
  first,
  { title: 'Requests', num: true, cell: r => f.count(r.usage.requests) },
  { title: 'Input', num: true, cell: r => f.tokens(r.usage.input_tokens) },
  { title: 'Output', num: true, cell: r => f.tokens(r.usage.output_tokens) },
  { title: 'Cost', num: true, cell: r => f.usd(r.usage.cost_usd) },
];

const byModel = obj => Object.entries(obj || {}).map(([model, usage]) => ({ model, usage }))
  .sort((a, b) => b.usage.cost_usd - a.usage.cost_usd || b.usage.requests - a.usage.requests);

async function planTitle(id) {
  const c = await publicCatalog();
  return c.plans.find(p => p.id === id)?.name || id;
}

// the account: plan, quota bars, cost, reset, by day, model and key
export async function overview(main) {
  const s = session();
  if (s.role === 'key') return keyOverview(main);
  const a = (await get('/v1/account')).data;
  const u = a.usage;
  main.append(
    h('h1', null, a.name ? `${a.name}` : 'Your account'),
    h('p', { class: 'lead' }, `Account ${a.id} · ${a.status}`,
      a.status === 'suspended' ? ' · its keys are refused until the operator resumes it' : ''),
    h('div', { class: 'grid' },
      stat('Plan', await planTitle(a.plan), h('a', { href: '#/plans' }, 'See the plans')),
      stat('Cost this month', f.usd(u.cost_usd), `${f.count(u.requests)} requests`),
      stat('Resets', f.until(a.reset_at), f.when(a.reset_at)),
      stat('Keys', f.count(a.keys.active), `${f.count(a.keys.total)} made`)),
    h('h2', null, `This month (${u.period})`),
    h('div', { class: 'panel' },
      meter('Input tokens', u.input_tokens, a.limits.input_tokens),
      meter('Output tokens', u.output_tokens, a.limits.output_tokens, 'out'),
      a.limits.requests_per_minute ? h('p', { class: 'muted' },
        `At most ${f.count(a.limits.requests_per_minute)} requests a minute.`) : null),
    h('h2', null, 'Tokens per day'),
    h('div', { class: 'panel' }, dailyChart(a.usage_by_day)),
    h('h2', null, 'By model'),
    table(usageColumns({ title: 'Model', name: true, cell: r => r.model }), byModel(a.usage_by_model),
          'No requests this month.'),
    h('h2', null, 'By key'),
    table(usageColumns({ title: 'Key', name: true, cell: r => [r.name || r.id, ' ',
            r.status !== 'active' ? h('span', { class: 'badge warn' }, r.status) : null] }),
          a.usage_by_key, 'No keys yet: make one on the Keys page.'));
}

// signed in with an API key: what it has used, and its account's
async function keyOverview(main) {
  const k = (await get('/v1/key')).data;
  const u = k.usage;
  main.append(
    h('h1', null, `Key ${k.name || k.id}`),
    h('p', { class: 'lead' }, 'Signed in with an API key: read-only. Its account\'s management key manages keys.'),
    h('div', { class: 'grid' },
      stat('Plan', await planTitle(k.plan), h('a', { href: '#/plans' }, 'See the plans')),
      stat('Cost this month', f.usd(u.cost_usd), `${f.count(u.requests)} requests`),
      stat('Resets', f.until(k.reset_at), f.when(k.reset_at)),
      k.account ? stat('Account', k.account.name || k.account.id, f.usd(k.account.usage.cost_usd) + ' this month')
                : null),
    h('h2', null, `This key this month (${u.period})`),
    h('div', { class: 'panel' },
      meter('Input tokens', u.input_tokens, u.input_tokens + (k.remaining?.input_tokens ?? 0)),
      meter('Output tokens', u.output_tokens, u.output_tokens + (k.remaining?.output_tokens ?? 0), 'out'),
      h('p', { class: 'muted' }, 'The bars are against what this key may use: the tighter of its own cap and its account\'s quota.')),
    h('h2', null, k.usage_by_model ? 'By model' : 'Its account, by model'),
    table(usageColumns({ title: 'Model', name: true, cell: r => r.model }),
          byModel(k.usage_by_model || k.account_usage_by_model), 'No requests this month.'));
}

// the models this account reaches: its plan's and its own private ones
async function reachable() {
  const [c, a] = await Promise.all([publicCatalog(), get('/v1/account')]);
  const plan = c.plans.find(p => p.id === a.data.plan);
  return [...new Set([...(plan ? plan.models : []), ...(a.data.models || [])])];
}

function limitsFrom(v) {
  const n = x => x === '' ? null : Number(x);
  for (const x of [v.input_tokens, v.output_tokens, v.requests_per_minute]) {
    if (x !== '' && !/^\d+$/.test(x)) throw new Error('A limit is a whole number of tokens or requests, or empty for none.');
  }
  return { input_tokens: n(v.input_tokens), output_tokens: n(v.output_tokens),
           requests_per_minute: n(v.requests_per_minute) };
}

function expiryFrom(v) {
  if (!v.expires) return null;
  const t = Date.parse(v.expires + 'T23:59:59Z');
  if (isNaN(t)) throw new Error('The expiry is a date.');
  return Math.floor(t / 1000);
}

// the fields of a key's form: name, limits, models, expiry
function keyFields(models, k) {
  const lim = k?.limits || {};
  const num = (name, label, hint) => h('label', null, label,
    h('input', { name, inputmode: 'numeric', pattern: '[0-9]*', value: lim[name] ?? '', placeholder: 'the account\'s' }),
    h('span', { class: 'hint' }, hint));
  const chosen = k?.models;
  // a model the operator set that the account's list lacks stays listed
  models = [...new Set([...models, ...(chosen || [])])];
  return [
    h('label', null, 'Name', h('input', { name: 'name', maxlength: 100, required: true, value: k?.name || '',
                                          autocomplete: 'off' })),
    h('fieldset', null, h('legend', null, 'Limits (empty: the account\'s)'),
      h('div', { class: 'grid' },
        num('input_tokens', 'Input tokens a month', ''),
        num('output_tokens', 'Output tokens a month', ''),
        num('requests_per_minute', 'Requests a minute', ''))),
    h('fieldset', null, h('legend', null, 'Models (none ticked: every model of the account)'),
      h('div', { class: 'checks' }, models.map(m => h('label', null,
        h('input', { type: 'checkbox', name: 'models', value: m, checked: chosen ? chosen.includes(m) : false }), m)))),
    h('label', null, 'Expires', h('input', { type: 'date', name: 'expires',
        value: k?.expires_at ? new Date(k.expires_at * 1000).toISOString().slice(0, 10) : '' }),
      h('span', { class: 'hint' }, 'Empty: never. At the end of that day (UTC).')),
  ];
}

// a new key's fields; for a change, models and expiry only when changed
// (an expiry the API set to the second keeps its second)
function keyBody(v, k) {
  const body = { name: v.name, limits: limitsFrom(v) };
  const models = v.models.length ? v.models : null;
  const same = (a, b) => JSON.stringify(a ? [...a].sort() : null) === JSON.stringify(b ? [...b].sort() : null);
  if (!k || !same(models, k.models)) body.models = models;
  const was = k?.expires_at ? new Date(k.expires_at * 1000).toISOString().slice(0, 10) : '';
  if (!k || v.expires !== was) body.expires_at = expiryFrom(v);
  return body;
}

export async function keys(main) {
  const [list, models] = await Promise.all([get('/v1/keys?include_revoked=true&limit=1000'), reachable()]);
  main.append(h('h1', null, 'API keys'),
    h('p', { class: 'lead' }, 'One key per app, teammate or environment. Each counts its own usage; the month\'s quota is the account\'s.'));

  const form = h('form', { class: 'stack panel', 'aria-label': 'Create a key' },
    h('h2', null, 'Create a key'), keyFields(models, null),
    h('div', { class: 'actions' }, h('button', { class: 'primary', type: 'submit' }, 'Create key')));
  main.append(form);
  onSubmit(form, async v => {
    const r = await post('/v1/keys', keyBody(v));
    rememberKey(r.data.id, r.data.name, r.key);
    form.reset();
    await refresh();
    return h('div', null, secretBox(`Your new key "${r.data.name}"`, r.key),
             h('p', null, h('a', { href: `#/quickstart?key=${enc(r.data.id)}` }, 'Try it in Quickstart')));
  });

  const holder = h('div');
  main.append(h('h2', null, 'Your keys'), holder);

  async function refresh() {
    const data = (await get('/v1/keys?include_revoked=true&limit=1000')).data;
    render(data);
  }

  function render(data) {
    clear(holder);
    const rows = [...data.filter(k => k.status !== 'revoked'), ...data.filter(k => k.status === 'revoked')];
    holder.append(table([
      { title: 'Name', name: true, cell: k => [k.name || '(no name)', h('div', { class: 'muted' }, k.label)] },
      { title: 'Status', cell: k => h('span', { class: `badge ${k.status === 'active' && !k.disabled ? 'ok' : 'warn'}` },
                                      k.disabled && k.status === 'active' ? 'disabled' : k.status) },
      { title: 'Limits', cell: k => limitText(k) },
      { title: 'Requests', num: true, cell: k => f.count(k.usage.requests) },
      { title: 'Tokens in / out', num: true, cell: k => `${f.tokens(k.usage.input_tokens)} / ${f.tokens(k.usage.output_tokens)}` },
      { title: 'Cost', num: true, cell: k => f.usd(k.usage.cost_usd) },
      { title: 'Expires', cell: k => k.expires_at ? f.when(k.expires_at) : 'never' },
      { title: '', cell: k => k.status === 'revoked' ? '' : actions(k) },
    ], rows, 'No keys yet: create one above.'));
  }

  function actions(k) {
    const edit = h('button', { type: 'button', 'aria-label': `Edit ${k.name || k.id}` }, 'Edit');
    const revoke = h('button', { type: 'button', class: 'danger', 'aria-label': `Revoke ${k.name || k.id}` }, 'Revoke');
    edit.addEventListener('click', () => editKey(k, edit));
    armTwice(revoke, 'Click again to revoke', async () => {
      await del(`/v1/keys/${enc(k.id)}`);
      notice(`Key "${k.name || k.id}" revoked: it is refused from its next request.`);
      await refresh();
    });
    return h('div', { class: 'actions' }, edit, revoke);
  }

  function editKey(k, button) {
    const row = button.closest('tr');
    if (row.nextSibling?.classList?.contains('editing')) { row.nextSibling.remove(); return; }
    const form = h('form', { class: 'stack', 'aria-label': `Edit ${k.name || k.id}` }, keyFields(models, k),
      h('div', { class: 'checks' }, h('label', null,
        h('input', { type: 'checkbox', name: 'disabled', value: 'yes', checked: k.disabled }), 'Disabled (refused until unticked)')),
      h('div', { class: 'actions' }, h('button', { class: 'primary', type: 'submit' }, 'Save'),
        h('button', { type: 'button', onclick: () => edits.remove() }, 'Cancel')));
    const edits = h('tr', { class: 'editing' }, h('td', { colspan: 8 }, form));
    row.after(edits);
    form.querySelector('input').focus();
    onSubmit(form, async v => {
      await patch(`/v1/keys/${enc(k.id)}`, { ...keyBody(v, k), disabled: v.disabled.length > 0 });
      notice(`Key "${v.name}" saved.`);
      await refresh();
    });
  }

  render(list.data);
}

function limitText(k) {
  const l = k.limits || {};
  const parts = [];
  if (l.input_tokens !== null && l.input_tokens !== undefined) parts.push(`${f.tokens(l.input_tokens)} in`);
  if (l.output_tokens !== null && l.output_tokens !== undefined) parts.push(`${f.tokens(l.output_tokens)} out`);
  if (l.requests_per_minute) parts.push(`${l.requests_per_minute}/min`);
  if (k.models) parts.push(k.models.join(', '));
  return parts.length ? parts.join(' · ') : 'the account\'s';
}

// a button that acts on its second press (the first says what will happen)
export function armTwice(button, warning, work) {
  const label = button.textContent;
  const aria = button.getAttribute('aria-label');
  const say = (text, name) => {
    button.textContent = text;
    if (aria) button.setAttribute('aria-label', name);
  };
  let armed = false;
  button.addEventListener('click', async () => {
    if (!armed) {
      armed = true;
      say(warning, `${warning} (${aria})`);
      setTimeout(() => { armed = false; say(label, aria); }, 4000);
      return;
    }
    button.disabled = true;
    try { await work(); } catch (e) { notice(e.message); button.disabled = false; }
  });
}

export async function activity(main, params) {
  const [keysList, c] = await Promise.all([get('/v1/keys?include_revoked=true&limit=1000'), publicCatalog()]);
  main.append(h('h1', null, 'Activity'),
    h('p', { class: 'lead' }, 'The account\'s last requests, newest first (the last hour, up to 1,000).'));
  const keySel = h('select', { name: 'key', 'aria-label': 'Key' }, h('option', { value: '' }, 'Every key'),
    keysList.data.map(k => h('option', { value: k.id, selected: params.get('key') === k.id }, k.name || k.id)));
  const modelSel = h('select', { name: 'model', 'aria-label': 'Model' }, h('option', { value: '' }, 'Every model'),
    c.models.map(m => h('option', { value: m.id, selected: params.get('model') === m.id }, m.id)));
  const form = h('form', { class: 'inline', 'aria-label': 'Filter' },
    h('label', null, 'Key', keySel), h('label', null, 'Model', modelSel),
    h('button', { type: 'submit' }, 'Refresh'));
  const holder = h('div');
  main.append(form, holder);

  async function load() {
    const q = new URLSearchParams({ limit: '100' });
    if (keySel.value) q.set('key', keySel.value);
    if (modelSel.value) q.set('model', modelSel.value);
    const data = (await get('/v1/activity?' + q)).data;
    clear(holder).append(activityTable(data));
  }
  form.addEventListener('submit', ev => { ev.preventDefault(); load().catch(e => clear(holder).append(errorBox(e))); });
  await load();
}

export function activityTable(data) {
  return table([
    { title: 'Time', cell: g => f.when(g.created_at) },
    { title: 'Key', name: true, cell: g => g.key ? (g.key.name || g.key.id) : '—' },
    { title: 'Model', name: true, cell: g => g.model },
    { title: 'Tokens in / out', num: true, cell: g => `${f.count(g.tokens_prompt)} / ${f.count(g.tokens_completion)}` },
    { title: 'Cost', num: true, cell: g => f.usd(g.total_cost) },
    { title: 'Latency', num: true, cell: g => f.ms(g.latency) },
    { title: 'Status', cell: g => h('span', { class: `badge ${g.status < 400 ? 'ok' : 'bad'}` },
                                    String(g.status), g.cancelled ? ' cancelled' : '') },
  ], data, 'No requests in the last hour.');
}
