// The dashboard in a real browser (Debian's chromium, headless, driven by
// puppeteer-core): what an account holder and an operator do in it, and
// what it must never do (a name run as HTML, a request to another origin,
// a console error, a secret in localStorage).  t/54-dashboard.t starts the
// stack and reads what this prints: one line a check, "ok<TAB>what" or
// "not ok<TAB>what<TAB>why".
//
//   NEBULA_URL, NEBULA_ADMIN_TOKEN, NEBULA_SHOTS (a directory), CHROMIUM
'use strict';

const puppeteer = require('puppeteer-core');
const fs = require('fs');
const path = require('path');

const BASE = process.env.NEBULA_URL;
const ADMIN = process.env.NEBULA_ADMIN_TOKEN;
const SHOTS = process.env.NEBULA_SHOTS;
const ORIGIN = new URL(BASE).origin;
const DASH = `${BASE}/dashboard/`;
const HOSTILE = '<img src=x onerror=alert(1)>';

let failed = 0;
function check(cond, what, why) {
  if (cond) console.log(`ok\t${what}`);
  else { failed++; console.log(`not ok\t${what}\t${String(why ?? '').replace(/\s+/g, ' ').slice(0, 400)}`); }
  return cond;
}

async function api(method, p, secret, body) {
  const res = await fetch(BASE + p, {
    method, body: body ? JSON.stringify(body) : undefined,
    headers: { ...(secret ? { Authorization: `Bearer ${secret}` } : {}), 'Content-Type': 'application/json' },
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
  return { status: res.status, json, text };
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

let currentPage = null;   // for what a failure shows

async function main() {
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync',
           '--disable-default-apps', '--disable-extensions', '--metrics-recording-only',
           '--password-store=basic', '--use-mock-keychain'],
  });
  const context = await browser.createBrowserContext();
  await context.overridePermissions(ORIGIN, ['clipboard-read', 'clipboard-write', 'clipboard-sanitized-write']);
  const page = await context.newPage();
  currentPage = page;
  await page.setViewport({ width: 1280, height: 900 });

  // what must never happen, watched over the whole run
  const offOrigin = [];
  const consoleErrors = [];
  const dialogs = [];
  let expectRefusals = 0;
  page.on('request', req => {
    const u = req.url();
    if (!u.startsWith(ORIGIN + '/') && !u.startsWith('data:') && !u.startsWith('blob:')) offOrigin.push(u);
  });
  page.on('console', msg => {
    if (msg.type() !== 'error') return;
    // a refusal the flow asks for on purpose (a wrong secret) is logged
    // by the browser as a failed resource; nothing else may be
    if (expectRefusals > 0 && /status of (401|403|404)/.test(msg.text())) { expectRefusals--; return; }
    consoleErrors.push(msg.text());
  });
  page.on('pageerror', err => consoleErrors.push('page error: ' + err.message));
  page.on('dialog', async d => { dialogs.push(d.message()); await d.dismiss(); });
  const csvResponses = [];
  page.on('response', res => { if (res.url().includes('/admin/usage.csv')) csvResponses.push(res.status()); });

  const ready = async hash => {
    await page.waitForFunction(h => document.getElementById('main').getAttribute('data-ready') === h,
                               { timeout: 10000 }, hash);
  };
  // to a page; the page it is on again (a query the page ignores makes
  // the hash change, as a person's Refresh does)
  let visits = 0;
  const goto = async hash => {
    await page.evaluate((h, n) => {
      location.hash = location.hash === h ? h + (h.includes('?') ? '&' : '?') + 'visit=' + n : h;
    }, hash, ++visits);
    await ready(hash.split('?')[0]);
  };
  const text = () => page.$eval('main', m => m.innerText);
  const shots = [];
  // (a change of isMobile makes puppeteer reload the page: each size
  // waits for the page drawn again before it is taken, and so does what
  // comes after)
  const drawn = () => page.waitForFunction(() => {
    const m = document.getElementById('main');
    return m && m.getAttribute('data-ready') === location.hash.split('?')[0];
  }, { timeout: 10000 });
  const shoot = async name => {
    for (const [size, w, hgt] of [['desktop', 1280, 900], ['phone', 390, 844]]) {
      await page.setViewport({ width: w, height: hgt, isMobile: size === 'phone', hasTouch: size === 'phone' });
      await drawn();
      await sleep(50);
      const file = path.join(SHOTS, `${name}-${size}.png`);
      await page.screenshot({ path: file, fullPage: true });
      shots.push(file);
    }
    await page.setViewport({ width: 1280, height: 900 });
    await drawn();
  };
  const fill = async (selector, value) => {
    await page.$eval(selector, el => { el.value = ''; });
    await page.type(selector, value);
  };
  const secretsShown = () => page.$$eval('[data-secret]', els => els.map(e => e.textContent));
  const noSecretStored = async (secret, what) => {
    const ls = await page.evaluate(() => JSON.stringify(Object.assign({}, localStorage)));
    check(!ls.includes(secret), `${what}: no secret in localStorage`, ls);
  };

  // ---- signed out: sign-in, plans, models
  await page.goto(BASE + '/', { waitUntil: 'networkidle0' });
  check(page.url().startsWith(DASH), '/ leads to the dashboard', page.url());
  await ready('#/signin');
  check(page.url().endsWith('#/signin'), 'signed out: the sign-in page', page.url());
  await shoot('signin');

  // the keyboard alone: the field has the focus; Enter submits
  expectRefusals = 1;
  await page.keyboard.type('nb-not-a-key-at-all');
  await page.keyboard.press('Enter');
  await page.waitForSelector('.signin .error');
  check(/This secret was not accepted/.test(await text()), 'a wrong secret: the refusal in words', await text());
  expectRefusals = 0;

  await goto('#/plans');
  const plansText = await text();
  check(/Free[\s\S]*\$0\/mo[\s\S]*Developer[\s\S]*\$10\/mo[\s\S]*Pro[\s\S]*\$50\/mo[\s\S]*Enterprise[\s\S]*\$200\/mo/.test(plansText),
        'Plans: the four plans and their prices, as the API document', plansText);
  check(/100K input tokens\/mo[\s\S]*20K output tokens\/mo[\s\S]*2M input tokens\/mo[\s\S]*500K output tokens\/mo/.test(plansText),
        'Plans: their tokens as people read them (100K, 2M)', plansText);
  check(/POPULAR/.test(plansText) && /24\/7 support/.test(plansText), 'Plans: the popular mark and the perks', plansText);
  check(await page.$('a[href="#/signup"].button') !== null, 'sign-up open: "Get Started" on the free plan');
  await shoot('plans');

  await goto('#/models');
  const rows = await page.$$eval('main tbody tr', trs => trs.map(tr => [...tr.cells].map(td => td.innerText.trim())));
  check(rows.length === 5, 'Models: the five models', JSON.stringify(rows));
  const qwen = rows.find(r => r[0] === 'qwen3:latest') || [];
  check(qwen[1] === '32.8K' || qwen[1] === '33K' || qwen[1] === '32.8K', 'Models: the context in K', JSON.stringify(qwen));
  check(qwen[2] === 'General, reasoning' && qwen[3] === '$0.20' && qwen[4] === '$0.60',
        'Models: use, input and output price per 1M', JSON.stringify(qwen));
  const coder = rows.find(r => r[0] === 'qwen/qwen3-coder:free') || [];
  check(coder[3] === 'Free' && coder[4] === 'Free', 'Models: a free model says Free', JSON.stringify(coder));
  await shoot('models');

  // ---- the operator
  await goto('#/signin');
  await fill('input[name=secret]', ADMIN);
  await page.click('button[type=submit]');
  await ready('#/admin/accounts');
  check(true, 'the admin token signs in as the operator');
  await noSecretStored(ADMIN, 'operator');
  const ss = await page.evaluate(() => sessionStorage.getItem('nebula.session') || '');
  check(ss.includes(ADMIN), 'the admin token is in sessionStorage (the session only)');

  await fill('form[aria-label="Create an account"] input[name=name]', 'Ada Lovelace Ltd');
  await fill('form[aria-label="Create an account"] input[name=email]', 'ada@example.org');
  await page.select('form[aria-label="Create an account"] select[name=plan]', 'developer');
  await page.click('form[aria-label="Create an account"] button[type=submit]');
  await page.waitForSelector('.secret');
  const [mgmt, first] = await secretsShown();
  check(/^nbm-[0-9a-f]{16}-/.test(mgmt || ''), 'Accounts: create one; its management key shown once', mgmt);
  check(/^nb-[0-9a-f]{16}-/.test(first || ''), 'and its first API key', first);
  const acct = mgmt.split('-')[1];
  check((await api('GET', '/v1/account', mgmt)).json?.data?.plan === 'developer', 'the account exists, on the plan chosen');
  await shoot('admin-accounts');

  await fill('input[type=search]', 'lovelace');
  await page.click('form[role=search] button');
  await page.waitForFunction(() => [...document.querySelectorAll('main tbody a')].some(a => a.textContent === 'Ada Lovelace Ltd'));
  check(true, 'Accounts: found by a part of its name, in any case');

  await goto(`#/admin/account/${acct}`);
  await page.select('form[aria-label="Change plan"] select', 'pro');
  await page.click('form[aria-label="Change plan"] button');
  await page.waitForFunction(() => /Plan changed to pro/.test(document.getElementById('notice').textContent), { timeout: 10000 });
  // (the page is drawn again after each change: wait for it each time)
  await ready(`#/admin/account/${acct}`);
  check((await api('GET', '/v1/account', mgmt)).json?.data?.plan === 'pro', 'an account: its plan changed in the page holds in the API');
  await page.waitForFunction(() => [...document.querySelectorAll('button')].some(b => b.textContent === 'Suspend'));
  const suspend = await page.evaluateHandle(() => [...document.querySelectorAll('button')].find(b => b.textContent === 'Suspend'));
  await suspend.click();
  await suspend.click();
  await page.waitForFunction(() => /Suspended/.test(document.getElementById('notice').textContent), { timeout: 10000 });
  await ready(`#/admin/account/${acct}`);
  const refused = await api('POST', '/v1/chat/completions', first,
                            { model: 'qwen3:latest', messages: [{ role: 'user', content: 'hi' }] });
  check(refused.status === 403 && refused.json?.error?.code === 'account_suspended', 'suspended in the page: its key gets 403',
        refused.text);
  await page.waitForFunction(() => [...document.querySelectorAll('button')].some(b => b.textContent === 'Resume'));
  const resume = await page.evaluateHandle(() => [...document.querySelectorAll('button')].find(b => b.textContent === 'Resume'));
  await resume.click();
  await page.waitForFunction(() => /Resumed/.test(document.getElementById('notice').textContent), { timeout: 10000 });
  await ready(`#/admin/account/${acct}`);
  const served = await api('POST', '/v1/chat/completions', first,
                           { model: 'qwen3:latest', max_tokens: 20, messages: [{ role: 'user', content: 'hi' }] });
  check(served.status === 200, 'resumed: served again', served.text);
  await shoot('admin-account');

  // a key made by the operator in the account's page, then revoked there
  await fill('form[aria-label="Create a key"] input[name=name]', 'ops key');
  await page.click('form[aria-label="Create a key"] button[type=submit]');
  await page.waitForSelector('.secret [data-secret]');
  const [opsKey] = await secretsShown();
  check((await api('GET', '/v1/key', opsKey)).status === 200, 'an account\'s page: the operator makes a key, which works');
  const opsRevoke = await page.evaluateHandle(() => [...document.querySelectorAll('button')]
    .find(b => b.getAttribute('aria-label') === 'Revoke ops key'));
  await opsRevoke.click();
  await opsRevoke.click();
  await page.waitForFunction(() => /revoked/.test(document.getElementById('notice').textContent), { timeout: 10000 });
  const opsGone = await api('GET', '/v1/key', opsKey);
  check(opsGone.status === 401, 'and revokes it there: 401', opsGone.text);

  // (with quota leases a request's usage reaches Redis within a second)
  let usageText = '';
  for (let i = 0; i < 20 && !/qwen3:latest/.test(usageText); i++) {
    if (i) await sleep(250);
    await goto('#/admin/usage');
    usageText = await text();
  }
  check(/Top accounts/.test(usageText) && /Per model/.test(usageText) && /Per plan/.test(usageText) && /qwen3:latest/.test(usageText),
        'Usage: per day, top accounts, per model and plan', usageText.slice(0, 300));
  const csvButton = await page.evaluateHandle(() => [...document.querySelectorAll('button')].find(b => b.textContent === 'CSV by account'));
  await csvButton.click();
  await page.waitForFunction(n => true, {}, 0);
  for (let i = 0; i < 50 && !csvResponses.length; i++) await sleep(100);
  check(csvResponses[0] === 200, 'Usage: the CSV export is fetched with the token', JSON.stringify(csvResponses));
  await shoot('admin-usage');

  await goto('#/admin/health');
  const healthText = await text();
  check(/Redis[\s\S]*up/.test(healthText) && /Pool ollama_local/.test(healthText), 'Health: Redis up, the pools', healthText.slice(0, 300));
  await shoot('admin-health');

  await page.click('#signout');
  await ready('#/signin');
  check(await page.evaluate(() => sessionStorage.length) === 0, 'sign-out clears the session');

  // ---- the holder, with the management key
  await fill('input[name=secret]', mgmt);
  await page.click('button[type=submit]');
  await ready('#/overview');
  const ov = await text();
  check(/Ada Lovelace Ltd/.test(ov) && /Pro/.test(ov) && /Input tokens/.test(ov) && /Resets/.test(ov),
        'Overview: the account, its plan, the quota bars, the reset', ov.slice(0, 300));
  check(await page.$('.chart svg') !== null && await page.$('[role=progressbar]') !== null, 'Overview: the chart and the bars');
  await noSecretStored(mgmt, 'holder');

  await goto('#/keys');
  // the keyboard alone: Tab from the top of the page to the new key's
  // name, type it, Enter; the first Tab reaches "Skip to content"
  // (a reload: the session stays, and focus starts at the top again)
  await page.reload({ waitUntil: 'networkidle0' });
  await ready('#/keys');
  await page.keyboard.press('Tab');
  check(await page.evaluate(() => document.activeElement.className === 'skip'), 'the first Tab: "Skip to content"');
  await page.keyboard.press('Enter');
  await sleep(100);
  check(await page.evaluate(() => location.hash === '#/keys' && document.activeElement.id === 'main'),
        'Enter on it: the focus on the page, the page unchanged', await page.evaluate(() => location.hash + ' ' + document.activeElement.tagName));
  let tabs = 0;
  while (tabs++ < 40 && !await page.evaluate(() =>
      document.activeElement.name === 'name' && !!document.activeElement.closest('form[aria-label="Create a key"]'))) {
    await page.keyboard.press('Tab');
  }
  await page.keyboard.type('typed with the keyboard');
  await page.keyboard.press('Enter');
  await page.waitForSelector('.secret [data-secret]');
  check(/typed with the keyboard/.test(await page.$eval('.secret', e => e.textContent)),
        `Keys: a key made with the keyboard alone (${tabs} Tabs)`);
  await fill('form[aria-label="Create a key"] input[name=name]', HOSTILE);
  await fill('form[aria-label="Create a key"] input[name=output_tokens]', '1000');
  await page.click('form[aria-label="Create a key"] button[type=submit]');
  await page.waitForSelector('.secret [data-secret]');
  const [made] = await secretsShown();
  check(/^nb-[0-9a-f]{16}-/.test(made || ''), 'Keys: a key made in the page, its secret shown once', made);
  await page.click('.secret [data-copy]');
  await page.waitForFunction(() => [...document.querySelectorAll('[data-copy]')].some(b => b.textContent === 'Copied'));
  const clip = await page.evaluate(() => navigator.clipboard.readText()).catch(e => 'no clipboard: ' + e.message);
  check(clip === made, 'the copy button copies it', clip);
  const shown = await page.$$eval('main td.name', tds => tds.map(td => td.firstChild && td.firstChild.textContent));
  check(shown.includes(HOSTILE), 'a key named <img src=x onerror=alert(1)> is shown as text', JSON.stringify(shown));
  check(await page.$('main img') === null, 'and no <img> was made of it');
  await noSecretStored(made, 'a key made');
  await shoot('keys');

  // the key works at once, with the API
  const chat = await api('POST', '/v1/chat/completions', made,
                         { model: 'qwen3:latest', max_tokens: 30, messages: [{ role: 'user', content: 'Hello' }] });
  check(chat.status === 200, 'the key made in the page works with the API', chat.text);
  check(chat.status === 200 && chat.json.usage.completion_tokens > 0, 'and it used tokens');

  // Activity shows the request, usage moves
  let seen = false;
  for (let i = 0; i < 30 && !seen; i++) {
    await goto('#/activity');
    seen = (await page.$$eval('main tbody tr', trs => trs.map(tr => tr.innerText))).some(t => t.includes(HOSTILE) && t.includes('qwen3:latest'));
    if (!seen) await sleep(300);
  }
  check(seen, 'Activity: the request, with its key by name and its model');
  await shoot('activity');
  let moved = false;
  for (let i = 0; i < 20 && !moved; i++) {
    await goto('#/keys');
    const row = await page.$$eval('main tbody tr', (trs, n) => {
      const tr = trs.find(t => t.cells[0] && t.cells[0].firstChild && t.cells[0].firstChild.textContent === n);
      return tr ? [...tr.cells].map(td => td.innerText.trim()) : null;
    }, HOSTILE);
    moved = row && row[3] === '1';
    if (!moved) await sleep(300);
  }
  check(moved, 'Keys: the key\'s usage moved (1 request)');
  await goto('#/overview');
  check(!/\$0\n/.test(await page.$eval('.stat .value', () => '')) && /1 requests|[2-9] requests|\d\d+ requests/.test(await text()),
        'Overview: the month\'s requests count it', (await text()).slice(0, 200));
  await shoot('overview');

  // Activity, filtered by key: the other key's request is left out
  await goto('#/activity');
  const keyIds = await page.$$eval('select[name=key] option', os => os.map(o => [o.value, o.textContent]));
  const firstId = (keyIds.find(([, n]) => n === 'first') || [])[0];
  await page.select('select[name=key]', firstId || '');
  await page.click('form[aria-label="Filter"] button');
  await page.waitForFunction(() => ![...document.querySelectorAll('main tbody tr')].some(tr => tr.innerText.includes('<img')),
                             { timeout: 10000 }).catch(() => {});
  const filtered = await page.$$eval('main tbody tr', trs => trs.map(tr => tr.cells[1] ? tr.cells[1].innerText : ''));
  check(firstId && filtered.length > 0 && filtered.every(n => n === 'first'), 'Activity: filtered by key', JSON.stringify(filtered));

  // Edit keeps what it does not show changed: an expiry to the second,
  // the models, as the API set them
  const keyId = (await api('GET', '/v1/key', made)).json.data.id;
  const expiry = Math.floor(Date.now() / 1000) + 10 * 86400 + 123;
  const set = await api('PATCH', `/v1/keys/${keyId}`, mgmt, { expires_at: expiry, models: ['gemma3:1b', 'qwen3:latest'] });
  check(set.status === 200, 'the key given an expiry and two models by the API', set.text);

  // Edit: rename, and a new output cap
  await goto('#/keys');
  const edit = await page.evaluateHandle(n => [...document.querySelectorAll('button')]
    .find(b => b.getAttribute('aria-label') === `Edit ${n}`), HOSTILE);
  await edit.click();
  await page.waitForSelector('tr.editing form');
  await fill('tr.editing input[name=name]', 'renamed <b>key</b>');
  await fill('tr.editing input[name=output_tokens]', '2000');
  await page.click('tr.editing button[type=submit]');
  await page.waitForFunction(() => /saved/.test(document.getElementById('notice').textContent), { timeout: 10000 });
  const after = await api('GET', '/v1/key', made);
  check(after.json?.data?.name === 'renamed <b>key</b>' && after.json?.data?.limits?.output_tokens === 2000,
        'Keys: renamed and its cap changed in the page; the API has both', after.text);
  check(after.json?.data?.expires_at === expiry && JSON.stringify([...(after.json?.data?.models || [])].sort()) === '["gemma3:1b","qwen3:latest"]',
        'and its expiry (to the second) and models are as they were', after.text);
  const chat2 = await api('POST', '/v1/chat/completions', made,
                          { model: 'qwen3:latest', max_tokens: 5, messages: [{ role: 'user', content: 'again' }] });
  check(chat2.status === 200, 'the key still serves its models', chat2.text);
  check(await page.$('main b') === null, 'the new name is text too');

  // Quickstart: the base URL and the key made in this session filled in
  await goto('#/quickstart');
  const snippet = await page.$$eval('pre code', els => els.map(e => e.textContent));
  check(snippet.length === 3 && snippet.every(s => s.includes(made)) && snippet.every(s => s.includes(BASE)),
        'Quickstart: curl, Python and JavaScript with this service and the key', snippet.join('\n').slice(0, 300));
  check(/import requests/.test(snippet[1]) && /console\.log\(data\.choices\[0\]\.message\.content\)/.test(snippet[2]),
        'Quickstart: the API document\'s examples');
  await shoot('quickstart');

  await goto('#/models');
  check(/In your plan/.test(await page.$eval('main', m => m.textContent)), 'Models: whether the plan reaches each');
  await goto('#/plans');
  check(await page.$('.plan.current') !== null && /Your plan/.test(await page.$eval('.plan.current', e => e.innerText)),
        'Plans: the current one marked');

  // revoke it in the page: 401 at its next request
  await goto('#/keys');
  const revoke = await page.evaluateHandle(n => [...document.querySelectorAll('button')]
    .find(b => b.getAttribute('aria-label') === `Revoke ${n}`), 'renamed <b>key</b>');
  await revoke.click();
  await revoke.click();
  await page.waitForFunction(() => /revoked/.test(document.getElementById('notice').textContent), { timeout: 10000 });
  const gone = await api('POST', '/v1/chat/completions', made, { model: 'qwen3:latest', messages: [{ role: 'user', content: 'hi' }] });
  check(gone.status === 401, 'Keys: revoked in the page, the key gets 401', gone.text);

  // an API error shown in words: a name too long for the API
  await fill('form[aria-label="Create a key"] input[name=name]', 'ok');
  await page.$eval('form[aria-label="Create a key"] input[name=name]', el => { el.removeAttribute('maxlength'); el.value = 'n'.repeat(150); });
  expectRefusals = 0;
  await page.click('form[aria-label="Create a key"] button[type=submit]');
  await page.waitForSelector('.form-result .error');
  const err = await page.$eval('.form-result .error', e => e.textContent);
  check(err.length > 10 && !/^\s*\{/.test(err), 'an API error is shown in words', err);
  consoleErrors.splice(0, consoleErrors.length, ...consoleErrors.filter(e => !/status of 400/.test(e)));

  // dark, on a phone
  await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'dark' }]);
  await goto('#/overview');
  const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  check(bg === 'rgb(18, 19, 26)', 'dark when the system is dark', bg);
  await shoot('overview-dark');
  await page.click('#theme');
  const toggled = await page.evaluate(() => [document.documentElement.getAttribute('data-theme'),
    getComputedStyle(document.body).backgroundColor, localStorage.getItem('nebula.theme')]);
  check(toggled[0] === 'light' && toggled[1] === 'rgb(246, 247, 251)' && toggled[2] === 'light',
        'the ◐ button: light over a dark system, remembered', JSON.stringify(toggled));
  await page.click('#theme');
  check(await page.evaluate(() => getComputedStyle(document.body).backgroundColor) === 'rgb(18, 19, 26)',
        'and back to dark');
  await page.evaluate(() => { localStorage.removeItem('nebula.theme'); document.documentElement.removeAttribute('data-theme'); });
  await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'light' }]);

  await page.click('#signout');
  await ready('#/signin');

  // ---- read-only, with an API key
  await fill('input[name=secret]', first);
  await page.click('button[type=submit]');
  await ready('#/overview');
  check(/read-only/.test(await text()), 'an API key signs in read-only');
  const navText = await page.$eval('nav', n => n.innerText);
  check(!/Keys/.test(navText) && !/Activity/.test(navText), 'and has no Keys or Activity page', navText);
  await goto('#/quickstart');
  check((await page.$$eval('pre code', els => els.map(e => e.textContent))).every(s => s.includes(first)),
        'Quickstart fills in the key signed in with');
  await page.click('#signout');
  await ready('#/signin');

  // ---- sign-up, from the plans page
  await goto('#/plans');
  await page.click('a[href="#/signup"].button');
  await ready('#/signup');
  await shoot('signup');
  await fill('form[aria-label="Sign up"] input[name=name]', 'Grace');
  await fill('form[aria-label="Sign up"] input[name=email]', 'grace@example.org');
  await page.click('form[aria-label="Sign up"] button[type=submit]');
  await page.waitForSelector('.secret [data-secret]');
  const [smgmt, skey] = await secretsShown();
  check(/^nbm-/.test(smgmt || '') && /^nb-/.test(skey || ''), 'Get Started: an account, its management key and a first key');
  const cont = await page.evaluateHandle(() => [...document.querySelectorAll('button')].find(b => b.textContent === 'Continue to my dashboard'));
  await cont.click();
  await ready('#/overview');
  check(/Grace/.test(await text()) && /Free/.test(await text()), 'and straight into its dashboard, on the Free plan');
  await goto('#/quickstart');
  check((await page.$$eval('pre code', els => els.map(e => e.textContent))).every(s => s.includes(skey)),
        'its first key filled in Quickstart');
  await page.click('#signout');

  // ---- what must never have happened
  check(offOrigin.length === 0, 'no request left the origin', offOrigin.join(' '));
  check(consoleErrors.length === 0, 'no console error', consoleErrors.join(' | '));
  check(dialogs.length === 0, 'no dialog (no alert ran)', dialogs.join(' | '));
  check(shots.length >= 20 && shots.every(f => fs.statSync(f).size > 5000), `${shots.length} screenshots, desktop and phone`);

  await browser.close();
}

main().then(() => process.exit(failed ? 1 : 0), async err => {
  // where it stopped: the page's address and what it showed
  let where = '';
  try {
    where = await currentPage.evaluate(() => `${location.hash} [${document.getElementById('main')
      .getAttribute('data-ready')}] ${document.getElementById('notice').textContent} | `
      + document.getElementById('main').innerText.slice(0, 600));
  } catch (e) { /* the browser is gone */ }
  check(false, 'the flows ran to their end', `${err.stack} AT ${where}`);
  process.exit(1);
});
