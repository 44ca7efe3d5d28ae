// What every visitor sees: models, plans, sign-up; and Quickstart, the
// API document's examples filled in with this service and a key.

import { h, clear, table, secretBox, copyButton, onSubmit } from './dom.js';
import * as f from './format.js';
import { get, post, session, setSession, publicCatalog } from './api.js';

async function currentPlan() {
  const s = session();
  if (!s || s.role === 'operator') return null;
  try {
    return s.role === 'key' ? (await get('/v1/key')).data.plan : (await get('/v1/account')).data.plan;
  } catch (e) {
    return null;
  }
}

export async function models(main) {
  const [c, plan] = await Promise.all([publicCatalog(), currentPlan()]);
  const reach = plan ? new Set(c.plans.find(p => p.id === plan)?.models || []) : null;
  main.append(h('h1', null, 'Models'),
    h('p', { class: 'lead' }, 'Prices are USD per million tokens. ',
      reach ? 'The last column says whether your plan reaches the model.' : ''),
    table([
      { title: 'Model', name: true, cell: m => h('code', null, m.id) },
      { title: 'Context', num: true, cell: m => f.tokens(m.context_length) },
      { title: 'Use', cell: m => m.description || '' },
      { title: 'Input / 1M', num: true, cell: m => f.perMillion(m.pricing.prompt) },
      { title: 'Output / 1M', num: true, cell: m => f.perMillion(m.pricing.completion) },
      reach ? { title: 'In your plan', cell: m => reach.has(m.id) ? h('span', { class: 'badge ok' }, 'Yes')
                                                                  : h('span', { class: 'badge' }, 'No') } : null,
    ].filter(Boolean), c.models));
}

export async function plans(main) {
  const [c, plan] = await Promise.all([publicCatalog(), currentPlan()]);
  main.append(h('h1', null, 'Plans'),
    h('p', { class: 'lead' }, 'Monthly token quotas; a month starts on the 1st (UTC).'),
    h('div', { class: 'plans' }, c.plans.map(p => h('section', {
        class: `panel plan ${p.id === plan ? 'current' : ''}`, 'aria-label': p.name },
      p.popular ? h('span', { class: 'badge tag' }, 'POPULAR') : null,
      h('h2', null, p.name),
      h('div', { class: 'price' }, `$${f.count(p.price_usd_monthly)}/mo`),
      h('ul', null,
        h('li', null, `${f.quota(p.limits.input_tokens)} input tokens/mo`),
        h('li', null, `${f.quota(p.limits.output_tokens)} output tokens/mo`),
        p.limits.requests_per_minute ? h('li', null, `${p.limits.requests_per_minute} requests a minute`) : null,
        p.perks.map(k => h('li', null, k))),
      h('p', { class: 'muted' }, `${p.models.length} models`),
      p.id === plan ? h('span', { class: 'badge ok' }, 'Your plan')
        : c.signup && c.signup.plan === p.id && !session() ? h('a', { href: '#/signup', class: 'button' }, 'Get Started')
        : h('span', { class: 'muted' }, p.price_usd_monthly ? 'Ask the operator to move your account here.' : '')))));
}

export async function signup(main, params, go) {
  const c = await publicCatalog();
  main.append(h('h1', null, 'Get started'));
  if (!c.signup) {
    main.append(h('p', { class: 'panel' }, 'Sign-up is closed on this service: ask its operator for an account.'));
    return;
  }
  const plan = c.plans.find(p => p.id === c.signup.plan);
  main.append(h('p', { class: 'lead' }, `A ${plan ? plan.name : c.signup.plan} account: `,
    plan ? `${f.quota(plan.limits.input_tokens)} input and ${f.quota(plan.limits.output_tokens)} output tokens a month, free.` : ''));
  const form = h('form', { class: 'stack panel', 'aria-label': 'Sign up' },
    h('label', null, 'Name', h('input', { name: 'name', maxlength: 100, required: true, autocomplete: 'name' })),
    h('label', null, 'Email', h('input', { name: 'email', type: 'email', maxlength: 200, autocomplete: 'email' })),
    c.signup.invite_required ? h('label', null, 'Invite code', h('input', { name: 'invite_code', required: true })) : null,
    h('div', { class: 'actions' }, h('button', { class: 'primary', type: 'submit' }, 'Create my account')));
  main.append(form);
  onSubmit(form, async v => {
    const body = { name: v.name };
    if (v.email) body.email = v.email;
    if (v.invite_code) body.invite_code = v.invite_code;
    const r = await post('/v1/accounts', body, { secret: null });
    form.remove();
    const cont = h('button', { class: 'primary', type: 'button' }, 'Continue to my dashboard');
    cont.addEventListener('click', () => {
      setSession({ role: 'holder', secret: r.management_key, name: r.data.name,
                   made: [{ id: r.key.id, name: r.key.name, secret: r.key.key }] });
      go('#/overview');
    });
    return h('div', null,
      secretBox('Your management key', r.management_key,
        'It signs in here and manages your keys; it cannot call a model. Shown this once: store it now.'),
      secretBox(`Your first API key ("${r.key.name}")`, r.key.key,
        'Send it as "Authorization: Bearer ..." to call the models. Shown this once: store it now.'),
      cont);
  });
}

// the API document's three examples, with this service and a key
function snippets(base, key, model) {
  return [
    ['curl', `curl -X POST ${base}/v1/chat/completions \\
  -H "Authorization: Bearer ${key}" \\
  -H "Content-Type: application/json" \\
  -d '{"model": "${model}", "messages": [{"role": "user", "content": "Hello"}]}'`],
    ['Python', `import requests

API_KEY = "${key}"
BASE_URL = "${base}"

headers = {
    "Authorization": f"Bearer {API_KEY}",
    "Content-Type": "application/json"
}

response = requests.post(
    f"{BASE_URL}/v1/chat/completions",
    headers=headers,
    json={
        "model": "${model}",
        "messages": [{"role": "user", "content": "Hello!"}]
    }
)

print(response.json()["choices"][0]["message"]["content"])`],
    ['JavaScript', `const response = await fetch('${base}/v1/chat/completions', {
  method: 'POST',
  headers: {
    'Authorization': 'Bearer ${key}',
    'Content-Type': 'application/json'
  },
  body: JSON.stringify({
    model: '${model}',
    messages: [{ role: 'user', content: 'Hello!' }]
  })
});

const data = await response.json();
console.log(data.choices[0].message.content);`],
  ];
}

export async function quickstart(main, params) {
  const s = session();
  const c = await publicCatalog();
  const base = location.origin;
  // the keys whose secret this session knows: the one signed in with, or
  // those made here (a key's secret is shown once, never read back)
  const known = s?.role === 'key' ? [{ id: 'self', name: 'the key you signed in with', secret: s.secret }]
                                  : (s?.made || []);
  const pick = known.find(k => k.id === params.get('key')) || known[known.length - 1];
  const keySel = h('select', { 'aria-label': 'Key' },
    known.map(k => h('option', { value: k.secret, selected: k === pick }, k.name || k.id)),
    h('option', { value: '' }, 'YOUR_API_KEY (type your own below)'));
  const pasted = h('input', { 'aria-label': 'An API key of yours', placeholder: 'or paste an API key (nb-...)',
                              autocomplete: 'off', spellcheck: 'false' });
  const modelSel = h('select', { 'aria-label': 'Model' }, c.models.filter(m => !m.architecture
      || m.architecture.output_modalities[0] !== 'embeddings')
    .map(m => h('option', { value: m.id, selected: m.id === 'qwen3:latest' }, m.id)));
  const out = h('div');

  main.append(h('h1', null, 'Quickstart'),
    h('p', { class: 'lead' }, `The API document's examples, for ${base}. Any OpenAI client works with base URL ${base}/v1.`),
    h('div', { class: 'panel' }, h('form', { class: 'inline', 'aria-label': 'Fill in' },
      h('label', null, 'Key', keySel), h('label', null, 'Or your own', pasted), h('label', null, 'Model', modelSel))),
    known.length ? null : h('p', { class: 'muted' },
      'A key\'s secret is shown once, when it is made: make one on the Keys page and it is filled in here, or paste one.'),
    out);

  function render() {
    const key = pasted.value.trim() || keySel.value || 'YOUR_API_KEY';
    clear(out).append(...snippets(base, key, modelSel.value).map(([lang, code]) =>
      h('section', { class: 'snippet', 'aria-label': lang },
        h('div', { class: 'head' }, h('h2', null, lang), copyButton(() => code, `Copy ${lang}`)),
        h('pre', null, h('code', { 'data-lang': lang }, code)))));
  }
  for (const el of [keySel, modelSel]) el.addEventListener('change', render);
  pasted.addEventListener('input', render);
  render();
}
