// Building the page.  Every string goes in as text (createTextNode,
// textContent, setAttribute): nothing here parses HTML, so a key named
// <img src=x onerror=alert(1)> is shown as those characters.

export function h(tag, props, ...children) {
  const el = tag.startsWith('svg:')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'class') {
      el.setAttribute('class', v);
    } else if (k === 'value' && 'value' in el) {
      el.value = v;
    } else if (k === 'checked' || k === 'selected' || k === 'disabled') {
      el[k] = true;
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// a table: columns [{title, num, cell: row => node|string}], rows
export function table(columns, rows, empty) {
  const head = h('tr', null, columns.map(c => h('th', { class: c.num ? 'num' : null, scope: 'col' }, c.title)));
  const body = rows.length
    ? rows.map(r => h('tr', null, columns.map(c =>
        h('td', { class: c.num ? 'num' : c.name ? 'name' : null }, c.cell(r)))))
    : [h('tr', null, h('td', { class: 'empty', colspan: columns.length }, empty || 'Nothing yet.'))];
  return h('div', { class: 'table-wrap' }, h('table', null, h('thead', null, head), h('tbody', null, body)));
}

// copies text to the clipboard, and says so on the button
export function copyButton(text, label) {
  const b = h('button', { type: 'button', 'data-copy': '' }, label || 'Copy');
  b.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(typeof text === 'function' ? text() : text);
      b.textContent = 'Copied';
    } catch (e) {
      // no clipboard (an insecure origin): select it for Ctrl-C instead
      const code = b.closest('.secret, .snippet')?.querySelector('code');
      if (code) window.getSelection().selectAllChildren(code);
      b.textContent = 'Press Ctrl-C to copy';
    }
    setTimeout(() => { b.textContent = label || 'Copy'; }, 2000);
  });
  return b;
}

// a secret shown once, with its copy button
export function secretBox(title, secret, words) {
  return h('div', { class: 'secret', role: 'alert' },
    h('h3', null, title),
    h('code', { 'data-secret': '' }, secret),
    h('div', { class: 'actions' }, copyButton(secret)),
    h('p', { class: 'muted' }, words || 'It is shown this once: store it now. Nebula keeps only its SHA-256.'));
}

export function errorBox(err) {
  return h('p', { class: 'error', role: 'alert' }, err.message || String(err));
}

export function notice(text) {
  const n = document.getElementById('notice');
  n.textContent = text || '';
  if (text) setTimeout(() => { if (n.textContent === text) n.textContent = ''; }, 6000);
}

// a form's fields by name, as strings (checkboxes: arrays of the checked)
export function formValues(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    if (el.type === 'checkbox') {
      (out[el.name] = out[el.name] || []);
      if (el.checked) out[el.name].push(el.value);
    } else {
      out[el.name] = el.value.trim();
    }
  }
  return out;
}

// a submit handler that disables the form while it works, and shows
// what went wrong in words under it
export function onSubmit(form, work) {
  const out = h('div', { class: 'form-result' });
  form.after(out);
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const buttons = form.querySelectorAll('button');
    buttons.forEach(b => { b.disabled = true; });
    clear(out);
    try {
      const node = await work(formValues(form));
      if (node) out.appendChild(node);
    } catch (e) {
      out.appendChild(errorBox(e));
    } finally {
      buttons.forEach(b => { b.disabled = false; });
    }
  });
  return out;
}
