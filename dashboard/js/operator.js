// The operator's pages, with the admin token: accounts and their keys,
// usage across the service, the CSV export, and the health of Redis and
// the pools.

import { h, clear, table, secretBox, errorBox, notice, onSubmit } from './dom.js';
import * as f from './format.js';
import { get, post, patch, del, call, enc, publicCatalog } from './api.js';
import { activityTable, armTwice } from './holder.js';

const statusBadge = s => h('span', { class: `badge ${s === 'active' ? 'ok' : s === 'suspended' ? 'warn' : 'bad'}` }, s);

const planOptions = (plans, selected) => plans.map(p => h('option', { value: p.id, selected: p.id === selected }, p.name));

export async function accounts(main, params) {
  const c = await publicCatalog();
  main.append(h('h1', null, 'Accounts'));

  const name = h('input', { name: 'name', type: 'search', value: params.get('name') || '', placeholder: 'a part of the name',
                            'aria-label': 'Search by name' });
  const plan = h('select', { name: 'plan', 'aria-label': 'Plan' }, h('option', { value: '' }, 'Every plan'),
                 planOptions(c.plans, params.get('plan')));
  const status = h('select', { name: 'status', 'aria-label': 'Status' }, h('option', { value: '' }, 'Active and suspended'),
    ['active', 'suspended', 'deleted'].map(s => h('option', { value: s, selected: params.get('status') === s }, s)));
  const search = h('form', { class: 'inline', role: 'search' }, h('label', null, 'Name', name),
                   h('label', null, 'Plan', plan), h('label', null, 'Status', status), h('button', { type: 'submit' }, 'Search'));
  const list = h('div');
  const more = h('div', { class: 'actions' });
  let after = '';

  let shown = null;   // the filters of the list on the page
  async function load(append) {
    let q = new URLSearchParams({ limit: '50' });
    if (name.value.trim()) q.set('name', name.value.trim());
    if (plan.value) q.set('plan', plan.value);
    if (status.value) q.set('status', status.value);
    if (append && shown) q = new URLSearchParams(shown);
    if (!append) shown = q.toString();
    if (append && after) q.set('after', after);
    const r = await get('/admin/accounts?' + q);
    after = r.last_id;
    const rows = append ? [...(list._rows || []), ...r.data] : r.data;
    list._rows = rows;
    clear(list).append(table([
      { title: 'Name', name: true, cell: a => a.status === 'deleted' ? (a.name || a.id)
          : h('a', { href: `#/admin/account/${enc(a.id)}` }, a.name || a.id) },
      { title: 'Email', name: true, cell: a => a.email || '' },
      { title: 'Plan', cell: a => a.plan },
      { title: 'Status', cell: a => statusBadge(a.status) },
      { title: 'Requests', num: true, cell: a => f.count(a.usage?.requests) },
      { title: 'Tokens in / out', num: true, cell: a => `${f.tokens(a.usage?.input_tokens)} / ${f.tokens(a.usage?.output_tokens)}` },
      { title: 'Cost', num: true, cell: a => f.usd(a.usage?.cost_usd) },
    ], rows, 'No account matches.'));
    clear(more);
    if (r.has_more) more.append(h('button', { type: 'button', onclick: () => load(true) }, 'More'));
  }
  search.addEventListener('submit', ev => { ev.preventDefault(); load(false).catch(e => clear(list).append(errorBox(e))); });

  const form = h('form', { class: 'stack panel', 'aria-label': 'Create an account' },
    h('h2', null, 'Create an account'),
    h('label', null, 'Name', h('input', { name: 'name', maxlength: 100, required: true, autocomplete: 'off' })),
    h('label', null, 'Email', h('input', { name: 'email', type: 'email', maxlength: 200, autocomplete: 'off' })),
    h('label', null, 'Plan', h('select', { name: 'plan' }, planOptions(c.plans, 'free'))),
    h('div', { class: 'checks' }, h('label', null, h('input', { type: 'checkbox', name: 'first_key', value: 'yes', checked: true }),
      'With a first API key')),
    h('div', { class: 'actions' }, h('button', { class: 'primary', type: 'submit' }, 'Create account')));

  main.append(search, list, more, form);
  onSubmit(form, async v => {
    const body = { name: v.name, plan: v.plan };
    if (v.email) body.email = v.email;
    if (v.first_key.length) body.key = { name: 'first' };
    const r = await post('/admin/accounts', body);
    form.reset();
    await load(false);
    return h('div', null,
      h('p', null, 'Account ', h('a', { href: `#/admin/account/${enc(r.data.id)}` }, r.data.name || r.data.id), ' made.'),
      secretBox('Its management key (give it to the holder)', r.management_key),
      r.key ? secretBox(`Its first API key ("${r.key.name}")`, r.key.key) : null);
  });
  await load(false);
}

export async function account(main, params, go, id) {
  const c = await publicCatalog();
  let a;
  try {
    a = await get(`/admin/accounts/${enc(id)}`);
  } catch (e) {
    if (e.status !== 404) throw e;
    // the usage report counts a key made by POST /admin/keys as an
    // account of its own: show that key
    const k = await get(`/admin/keys/${enc(id)}`).catch(() => null);
    if (!k) throw e;
    return standaloneKey(main, k, go);
  }
  const d = a.data;
  const base = `/admin/accounts/${enc(id)}`;
  main.append(h('p', null, h('a', { href: '#/admin/accounts' }, '← Accounts')),
    h('h1', null, d.name || d.id),
    h('p', { class: 'lead' }, `${d.id} · `, d.email || 'no email', ' · ', statusBadge(d.status)));

  // plan, suspend and resume
  const planSel = h('select', { name: 'plan', 'aria-label': 'Plan' }, planOptions(c.plans, d.plan));
  const planForm = h('form', { class: 'inline', 'aria-label': 'Change plan' }, h('label', null, 'Plan', planSel),
    h('button', { type: 'submit' }, 'Change plan'));
  const state = h('div', { class: 'actions' });
  if (d.status === 'active') {
    const b = h('button', { type: 'button', class: 'danger' }, 'Suspend');
    armTwice(b, 'Click again to suspend', async () => { await post(`${base}/suspend`); notice('Suspended: every key is refused.'); go(); });
    state.append(b);
  } else if (d.status === 'suspended') {
    const b = h('button', { type: 'button' }, 'Resume');
    b.addEventListener('click', async () => { await post(`${base}/resume`); notice('Resumed.'); go(); });
    state.append(b);
  }
  main.append(h('div', { class: 'panel actions' }, planForm, state));
  onSubmit(planForm, async v => {
    await patch(base, { plan: v.plan });
    notice(`Plan changed to ${v.plan}: the next request has it.`);
    go();
  });

  const u = d.usage;
  main.append(h('h2', null, `This month (${u.period})`),
    h('div', { class: 'grid' },
      h('div', { class: 'panel stat' }, h('div', { class: 'label' }, 'Cost'), h('div', { class: 'value' }, f.usd(u.cost_usd))),
      h('div', { class: 'panel stat' }, h('div', { class: 'label' }, 'Input tokens'),
        h('div', { class: 'value' }, f.tokens(u.input_tokens)), h('div', { class: 'muted' }, `of ${f.quota(d.limits.input_tokens)}`)),
      h('div', { class: 'panel stat' }, h('div', { class: 'label' }, 'Output tokens'),
        h('div', { class: 'value' }, f.tokens(u.output_tokens)), h('div', { class: 'muted' }, `of ${f.quota(d.limits.output_tokens)}`))));

  // its keys: revoke; a new one
  const keysBox = h('div');
  main.append(h('h2', null, 'Keys'), keysBox);
  async function loadKeys() {
    const k = await get(`${base}/keys?include_revoked=true&limit=1000`);
    clear(keysBox).append(table([
      { title: 'Name', name: true, cell: k => [k.name || '(no name)', h('div', { class: 'muted' }, k.label)] },
      { title: 'Status', cell: k => statusBadge(k.disabled && k.status === 'active' ? 'disabled' : k.status) },
      { title: 'Requests', num: true, cell: k => f.count(k.usage.requests) },
      { title: 'Cost', num: true, cell: k => f.usd(k.usage.cost_usd) },
      { title: '', cell: k => {
        if (k.status === 'revoked') return '';
        const b = h('button', { type: 'button', class: 'danger', 'aria-label': `Revoke ${k.name || k.id}` }, 'Revoke');
        armTwice(b, 'Click again to revoke', async () => {
          await del(`${base}/keys/${enc(k.id)}`);
          notice(`Key "${k.name || k.id}" revoked.`);
          await loadKeys();
        });
        return b;
      } },
    ], k.data, 'No keys.'));
  }
  await loadKeys();
  if (d.status !== 'deleted') {
    const kf = h('form', { class: 'inline', 'aria-label': 'Create a key' },
      h('label', null, 'New key\'s name', h('input', { name: 'name', maxlength: 100, required: true })),
      h('button', { type: 'submit' }, 'Create key'));
    main.append(kf);
    onSubmit(kf, async v => {
      const r = await post(`${base}/keys`, { name: v.name });
      kf.reset();
      await loadKeys();
      return secretBox(`The new key "${r.data.name}"`, r.key);
    });
  }

  const act = await get(`${base}/activity?limit=50`);
  main.append(h('h2', null, 'Last requests'), activityTable(act.data));

  if (d.status !== 'deleted') {
    const b = h('button', { type: 'button', class: 'danger' }, 'Delete account');
    armTwice(b, 'Click again: its keys are revoked, its usage kept', async () => {
      await del(base);
      notice('Account deleted: its keys and management key are refused.');
      go('#/admin/accounts');
    });
    main.append(h('h2', null, 'Delete'), h('p', { class: 'muted' }, 'Revokes every key and the management key; the usage stays for billing.'), b);
  }
}

// a key of its own (POST /admin/keys): its plan, usage, and revoke
function standaloneKey(main, k, go) {
  main.append(h('p', null, h('a', { href: '#/admin/usage' }, '← Usage')),
    h('h1', null, k.name || k.id),
    h('p', { class: 'lead' }, `A key of its own (made with POST /admin/keys), plan ${k.plan} · `, statusBadge(k.status)),
    table([
      { title: 'Requests', num: true, cell: x => f.count(x.usage.requests) },
      { title: 'Tokens in / out', num: true, cell: x => `${f.tokens(x.usage.input_tokens)} / ${f.tokens(x.usage.output_tokens)}` },
      { title: 'Cost', num: true, cell: x => f.usd(x.usage.cost_usd) },
    ], [k]));
  if (k.status !== 'revoked') {
    const b = h('button', { type: 'button', class: 'danger' }, 'Revoke');
    armTwice(b, 'Click again to revoke', async () => {
      await del(`/admin/keys/${enc(k.id)}`);
      notice(`Key "${k.name || k.id}" revoked.`);
      go();
    });
    main.append(h('p', null, b));
  }
}

function month(offset) {
  const d = new Date();
  d.setUTCDate(1);
  d.setUTCMonth(d.getUTCMonth() - offset);
  return d.toISOString().slice(0, 7);
}

export async function usage(main, params, go) {
  const period = /^\d{4}-\d{2}$/.test(params.get('period') || '') ? params.get('period') : month(0);
  const months = [0, 1, 2, 3, 4, 5].map(i => month(i));
  if (!months.includes(period)) months.push(period);
  const periodSel = h('select', { 'aria-label': 'Month' }, months
    .map(m => h('option', { value: m, selected: m === period }, m)));
  periodSel.addEventListener('change', () => go(`#/admin/usage?period=${periodSel.value}`));
  const q = g => `/admin/usage?group_by=${g}&period=${period}`;
  const [days, models, plans, accts] = await Promise.all(['day', 'model', 'plan', 'account'].map(g => get(q(g))));

  const csv = g => {
    const b = h('button', { type: 'button' }, `CSV by ${g}`);
    b.addEventListener('click', async () => {
      // the CSV needs the token in a header: fetched here, saved as a file
      const res = await call('GET', `/admin/usage.csv?group_by=${g}&period=${period}`, undefined, { raw: true })
        .catch(e => { notice(e.message); return null; });
      if (!res) return;
      const url = URL.createObjectURL(await res.blob());
      const a = h('a', { href: url, download: `nebula-usage-${period}-by-${g}.csv` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    });
    return b;
  };

  const t = days.total;
  const top = [...accts.data].sort((a, b) => b.cost_usd - a.cost_usd || b.output_tokens - a.output_tokens).slice(0, 10);
  const cols = first => [first,
    { title: 'Requests', num: true, cell: r => f.count(r.requests) },
    { title: 'Input', num: true, cell: r => f.tokens(r.input_tokens) },
    { title: 'Output', num: true, cell: r => f.tokens(r.output_tokens) },
    { title: 'Cost', num: true, cell: r => f.usd(r.cost_usd) }];

  main.append(h('h1', null, 'Usage'),
    h('form', { class: 'inline', 'aria-label': 'Month' }, h('label', null, 'Month', periodSel),
      h('div', { class: 'actions' }, ['account', 'key', 'model', 'day', 'plan'].map(csv))),
    h('div', { class: 'grid' },
      h('div', { class: 'panel stat' }, h('div', { class: 'label' }, 'Cost'), h('div', { class: 'value' }, f.usd(t.cost_usd))),
      h('div', { class: 'panel stat' }, h('div', { class: 'label' }, 'Requests'), h('div', { class: 'value' }, f.count(t.requests))),
      h('div', { class: 'panel stat' }, h('div', { class: 'label' }, 'Input tokens'), h('div', { class: 'value' }, f.tokens(t.input_tokens))),
      h('div', { class: 'panel stat' }, h('div', { class: 'label' }, 'Output tokens'), h('div', { class: 'value' }, f.tokens(t.output_tokens)))),
    h('h2', null, 'Per day'),
    h('div', { class: 'panel' }, (await import('./chart.js')).dailyChart(days.data.map(d => ({ date: d.date, usage: d })))),
    h('h2', null, 'Top accounts'),
    table(cols({ title: 'Account', name: true, cell: r => h('a', { href: `#/admin/account/${enc(r.account)}` }, r.name || r.account) })
      .concat([{ title: 'Plan', cell: r => r.plan }]), top, 'No usage this month.'),
    h('h2', null, 'Per model'),
    table(cols({ title: 'Model', name: true, cell: r => r.model }), models.data, 'No usage this month.'),
    h('h2', null, 'Per plan'),
    table(cols({ title: 'Plan', cell: r => r.plan }), plans.data, 'No usage this month.'));
}

export async function health(main) {
  const d = await get('/admin/health');
  const r = d.redis;
  const word = { ok: 'Everything answers.', degraded: 'A pool\'s server is failing.', unavailable: 'Redis does not answer: requests are ' + (r.failure_mode === 'open' ? 'served unmetered.' : 'refused (503).') };
  main.append(h('h1', null, 'Health'),
    h('p', { class: 'lead' }, h('span', { class: `badge ${d.status === 'ok' ? 'ok' : d.status === 'degraded' ? 'warn' : 'bad'}` },
      d.status), ' ', word[d.status] || d.status,
      ` As worker ${d.pid} sees it, ${f.when(d.time)}.`),
    h('h2', null, 'Redis'),
    table([
      { title: 'Address', cell: x => x.address },
      { title: 'State', cell: x => h('span', { class: `badge ${x.state === 'up' ? 'ok' : 'bad'}` }, x.state) },
      { title: 'Round trip', num: true, cell: x => x.round_trip_ms === null ? '—' : `${x.round_trip_ms} ms` },
      { title: 'When down', cell: x => x.failure_mode === 'open' ? 'serve unmetered' : 'refuse (503)' },
    ], [r]),
    ...d.pools.flatMap(p => [h('h2', null, `Pool ${p.name}`),
      h('p', { class: 'muted' }, `${p.servers_up} of ${p.servers_total} servers up · ${p.scheme}`),
      table([
        { title: 'Server', cell: s => s.address + (s.backup ? ' (backup)' : '') },
        { title: 'State', cell: s => h('span', { class: `badge ${s.state === 'up' ? 'ok' : s.state === 'failing' ? 'warn' : 'bad'}` }, s.state) },
        { title: 'Failures', num: true, cell: s => f.count(s.fails) },
        { title: 'Last failure', cell: s => f.when(s.last_failure) },
      ], p.servers, 'No servers.')]),
    h('p', null, h('button', { type: 'button', onclick: () => location.reload() }, 'Refresh')));
}
