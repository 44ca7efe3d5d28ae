// The dashboard: sign-in, the pages each kind of secret reaches, and the
// router (the hash: #/keys, #/admin/accounts, ...).

import { h, clear, errorBox, notice } from './dom.js';
import { get, session, setSession, ApiError } from './api.js';
import * as holder from './holder.js';
import * as catalog from './catalog.js';
import * as operator from './operator.js';

// the pages of each role: [hash, title, render]
const PAGES = {
  holder: [['#/overview', 'Overview', holder.overview], ['#/keys', 'Keys', holder.keys],
           ['#/activity', 'Activity', holder.activity], ['#/quickstart', 'Quickstart', catalog.quickstart],
           ['#/models', 'Models', catalog.models], ['#/plans', 'Plans', catalog.plans]],
  key: [['#/overview', 'Overview', holder.overview], ['#/quickstart', 'Quickstart', catalog.quickstart],
        ['#/models', 'Models', catalog.models], ['#/plans', 'Plans', catalog.plans]],
  operator: [['#/admin/accounts', 'Accounts', operator.accounts], ['#/admin/usage', 'Usage', operator.usage],
             ['#/admin/health', 'Health', operator.health], ['#/models', 'Models', catalog.models],
             ['#/plans', 'Plans', catalog.plans]],
  none: [['#/signin', 'Sign in', signin], ['#/models', 'Models', catalog.models], ['#/plans', 'Plans', catalog.plans],
         ['#/signup', 'Get started', catalog.signup], ['#/quickstart', 'Quickstart', catalog.quickstart]],
};

const HOME = { holder: '#/overview', key: '#/overview', operator: '#/admin/accounts', none: '#/signin' };

const role = () => session()?.role || 'none';

// which kind of secret this is, and whether it works: the API answers
async function identify(secret) {
  const opts = { secret, signOutOn401: false };
  if (secret.startsWith('nbm-')) {
    const a = (await get('/v1/account', opts)).data;
    return { role: 'holder', name: a.name || a.id };
  }
  if (secret.startsWith('nb-')) {
    const k = (await get('/v1/key', opts)).data;
    return { role: 'key', name: k.name || k.id };
  }
  await get('/admin/health', opts);
  return { role: 'operator', name: 'operator' };
}

async function signin(main) {
  const input = h('input', { name: 'secret', type: 'password', required: true, autocomplete: 'off',
                             spellcheck: 'false', 'aria-describedby': 'secret-hint' });
  const form = h('form', { class: 'stack' },
    h('label', null, 'Secret', input),
    h('p', { id: 'secret-hint', class: 'muted' },
      'Your management key (nbm-...) manages your keys and shows your usage. An API key (nb-...) shows its own usage, read-only. The operator signs in with the admin token.'),
    h('div', { class: 'actions' }, h('button', { class: 'primary', type: 'submit' }, 'Sign in')));
  const out = h('div', { 'aria-live': 'polite' });
  main.append(h('section', { class: 'signin panel' }, h('h1', null, 'Sign in to Nebula'), form, out,
    h('p', null, 'No account yet? ', h('a', { href: '#/signup' }, 'Get started'), ' or see the ',
      h('a', { href: '#/plans' }, 'plans'), '.')));
  input.focus();
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    clear(out);
    const secret = input.value.trim();
    try {
      const who = await identify(secret);
      setSession({ ...who, secret, made: [] });
      input.value = '';
      go(HOME[who.role]);
    } catch (e) {
      out.append(errorBox(e instanceof ApiError && e.status === 401
        ? new Error(`This secret was not accepted: ${e.message}`) : e));
    }
  });
}

function signout() {
  setSession(null);
  go('#/signin');
}

function renderChrome(current) {
  const r = role();
  const nav = clear(document.getElementById('nav'));
  for (const [hash, title] of PAGES[r]) {
    nav.append(h('a', { href: hash, 'aria-current': current === hash ? 'page' : null }, title));
  }
  const who = clear(document.getElementById('who'));
  const s = session();
  if (s) {
    const label = { holder: 'Account', key: 'API key (read-only)', operator: 'Operator' }[s.role];
    who.append(h('span', null, `${label}: `, h('strong', null, s.name || '')),
               h('button', { type: 'button', id: 'signout', onclick: signout }, 'Sign out'));
  }
}

let generation = 0;

async function route() {
  const [path, query] = (location.hash || '#/').split('?');
  const params = new URLSearchParams(query || '');
  const r = role();
  const main = document.getElementById('main');
  main.removeAttribute('data-ready');
  let page = PAGES[r].find(([hash]) => hash === path);
  let arg;
  if (!page && r === 'operator' && path.startsWith('#/admin/account/')) {
    page = ['#/admin/accounts', 'Account', operator.account];
    try {
      arg = decodeURIComponent(path.slice('#/admin/account/'.length));
    } catch (e) {
      arg = '';
    }
  }
  if (!page) {
    // a page of another role, or none: its home (sign-in when signed out)
    const known = Object.values(PAGES).some(list => list.some(([hash]) => hash === path));
    if (known && r === 'none') notice('Sign in to see that page.');
    location.replace(HOME[r]);
    return;
  }
  document.getElementById('nav').classList.remove('open');
  renderChrome(page[0]);
  document.title = `${page[1]} · Nebula`;
  const mine = ++generation;
  const box = h('div', { 'aria-busy': 'true' });
  clear(main).append(box);
  try {
    await page[2](box, params, go, arg);
  } catch (e) {
    if (mine === generation) box.append(errorBox(e));
  }
  box.removeAttribute('aria-busy');
  if (mine !== generation) return;
  // a page change moves the focus to the page (its heading is read out),
  // unless the page put it somewhere itself (sign-in, its field)
  if (routed++ && (document.activeElement === document.body || !document.activeElement
                   || document.getElementById('nav').contains(document.activeElement))) {
    main.focus();
  }
  main.setAttribute('data-ready', path);
}

let routed = 0;

export function go(hash) {
  if (!hash || hash === location.hash) route();
  else location.hash = hash;
}

window.addEventListener('hashchange', route);
window.addEventListener('nebula:unauthorized', ev => {
  setSession(null);
  notice(`Signed out: ${ev.detail}`);
  go('#/signin');
});

// light, dark, or as the system says (a preference, not a secret)
const theme = localStorage.getItem('nebula.theme');
if (theme) document.documentElement.setAttribute('data-theme', theme);
document.getElementById('theme').addEventListener('click', () => {
  const set = document.documentElement.getAttribute('data-theme');
  const dark = set ? set === 'dark' : matchMedia('(prefers-color-scheme: dark)').matches;
  const next = dark ? 'light' : 'dark';
  document.documentElement.setAttribute('data-theme', next);
  localStorage.setItem('nebula.theme', next);
});
// the skip link: to the page, without touching the hash the router reads
document.querySelector('.skip').addEventListener('click', ev => {
  ev.preventDefault();
  document.getElementById('main').focus();
});
document.getElementById('menu-toggle').addEventListener('click', ev => {
  const nav = document.getElementById('nav');
  nav.classList.toggle('open');
  ev.currentTarget.setAttribute('aria-expanded', nav.classList.contains('open'));
});

route();
