// ordersync operator console: a small page over the JSON API (/api/...).
// No framework, no build step, nothing from a CDN. Every value from the
// server becomes a text node (el() below): order fields come from the
// internet, so no string is ever parsed as HTML.
'use strict';

// gen: the number of the view on screen; work started for an earlier view
// (a refresh timer, an answer arriving late) sees it changed and stops
const state = { csrf: null, operator: null, timer: null, destinations: [], gen: 0 };

// ---------------------------------------------------------------- helpers

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  // any depth: a list of [badge, ' '] pairs is as good as the badges
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function pad(n) { return String(n).padStart(2, '0'); }

// the browser's time zone, said with every time: "UTC", "UTC+02:00"
function zone(d) {
  const off = -d.getTimezoneOffset();
  if (off === 0) return 'UTC';
  const a = Math.abs(off);
  return `UTC${off > 0 ? '+' : '-'}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
}

function fmtTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zone(d)}`;
}

function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} days`;
}

function badge(text, kind) {
  return el('span', { class: `badge ${kind || text}` }, text);
}

// replaceChildren() would print a null as "null": absent parts are left out
function put(node, ...children) {
  node.replaceChildren(...children.filter(c => c !== null && c !== undefined && c !== false));
}

function setMain(...children) {
  put(document.getElementById('main'), ...children);
}

function errorBox(err) {
  return el('p', { class: 'error' }, String(err.message || err));
}

async function api(path, options) {
  const opts = Object.assign({ credentials: 'same-origin', headers: {} }, options || {});
  if (opts.body !== undefined) {
    opts.method = 'POST';
    opts.headers['Content-Type'] = 'application/json';
    opts.headers['X-CSRF-Token'] = state.csrf || '';
    opts.body = JSON.stringify(opts.body);
  }
  const r = await fetch(path, opts);
  const doc = await r.json().catch(() => ({}));
  if (r.status === 401) {
    // the session ended (expired, logged out, revoked): say why on the login
    // page, and come back here, filters and all, after logging in again
    sessionStorage.setItem('return_to', location.hash);
    const why = doc.error === 'session_expired' ? 'expired' : 'invalid';
    location.href = `/console/login?why=${why}`;
    throw new Error(doc.detail || 'logged out');
  }
  if (!r.ok) throw new Error(`${doc.error || r.status}: ${doc.detail || r.statusText}`);
  return doc;
}

function confirmDialog(text) {
  const d = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  return new Promise(resolve => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.returnValue = '';
    d.showModal();
  });
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [path, qs] = hash.split('?');
  return { parts: path.split('/').filter(Boolean), params: new URLSearchParams(qs || '') };
}

function go(path, params) {
  location.hash = `#/${path}${query(params || {})}`;
}

// ---------------------------------------------------------------- overview

// The busiest minute of any destination: every chart has that scale, so
// that bars compare across rows.
function chartMax(dests) {
  return Math.max(1, ...dests.flatMap(d => d.minutes.map(m => m[1] + m[2])));
}

function chart(minutes, max) {
  // minutes: [[minutes ago, delivered, failed, of which 429], ...]; max: the shared scale
  const w = 240, h = 48, bw = w / 60;
  const byAgo = new Map(minutes.map(m => [m[0], m]));
  const s = svg('svg', { width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: 'chart', role: 'img' });
  const total = minutes.reduce((a, m) => a + m[1], 0);
  const failed = minutes.reduce((a, m) => a + m[2], 0);
  s.append(svg('title', {}, `last hour: ${total} delivered, ${failed} failed attempts`));
  for (let ago = 59; ago >= 0; ago--) {
    const m = byAgo.get(ago);
    if (!m) continue;
    const x = (59 - ago) * bw;
    const okH = (m[1] / max) * h, failH = (m[2] / max) * h;
    const g = svg('g', {});
    g.append(svg('title', {}, `${ago} min ago: ${m[1]} delivered, ${m[2]} failed (${m[3]} × 429)`));
    if (okH > 0) g.append(svg('rect', { x, y: h - okH, width: bw - 0.5, height: okH, class: 'ok' }));
    if (failH > 0) g.append(svg('rect', { x, y: h - okH - failH, width: bw - 0.5, height: failH, class: 'fail' }));
    s.append(g);
  }
  return el('div', { class: 'chartbox' }, s,
    el('div', { class: 'muted small' }, `${total}/h delivered · ${(total / 60).toFixed(1)}/min`,
      failed ? ` · ${failed} failed` : '', ` · scale 0–${max}/min`));
}

function destState(d) {
  if (!d.enabled) return badge('disabled', 'dead');
  if (d.paused) return el('span', {}, badge('paused', 'blocked'), ' until ', fmtTime(d.paused_until));
  return badge('running', 'delivered');
}

async function viewOverview() {
  const gen = state.gen;
  const head = el('div', { class: 'titlebar' }, el('h1', {}, 'Overview'),
    el('span', { class: 'muted small', id: 'refreshed' }, ''));
  const problem = el('p', { class: 'error', id: 'overview-error', hidden: true });
  const box = el('div', {});
  setMain(head, problem, box);
  const refresh = async () => {
    if (gen !== state.gen) return;
    let doc;
    try {
      doc = await api('/api/overview');
    } catch (e) {
      if (gen !== state.gen) return;
      // keep the last figures, say they are stale and why
      problem.hidden = false;
      problem.textContent = `Refresh failed at ${fmtTime(new Date().toISOString())}: ${e.message}. Trying again in 5 s; the figures below are from the last success.`;
      state.timer = setTimeout(refresh, 5000);
      return;
    }
    if (gen !== state.gen) return;  // the operator went elsewhere meanwhile
    problem.hidden = true;
    state.destinations = doc.destinations.map(d => d.id);
    const max = chartMax(doc.destinations);
    const rows = doc.destinations.map(d => el('tr', { 'data-destination': d.id },
      el('td', {}, el('strong', {}, d.id), el('div', { class: 'muted small' }, d.mode)),
      el('td', {}, destState(d),
        d.consecutive_failures ? el('div', { class: 'muted small' },
          `${d.consecutive_failures}/${d.breaker_threshold} failures in a row`) : null,
        d.rate_limit_per_s !== null && d.rate_limit_per_s !== undefined
          ? el('div', { class: 'muted small' }, `rate limit ${d.rate_limit_per_s}/s`) : null),
      el('td', { class: 'num' }, `${d.pending}${d.unread_capped ? '+' : ''}`),
      el('td', { class: 'num' }, d.retrying),
      el('td', { class: 'num' }, d.delivering),
      el('td', { class: 'num' }, d.blocked ? el('a', { href: `#/dead?state=blocked&destination=${d.id}` }, d.blocked) : 0),
      el('td', { class: 'num' }, d.dead ? el('a', { href: `#/dead?state=dead&destination=${d.id}`, class: 'deadlink' }, d.dead) : 0),
      el('td', { class: 'num' }, fmtAge(d.oldest_pending_s)),
      el('td', {}, chart(d.minutes, max))));
    const heads = [['destination'], ['state'], ['pending', 'num'], ['retrying', 'num'], ['in flight', 'num'],
      ['blocked', 'num'], ['dead', 'num'], ['oldest waiting', 'num'], [`deliveries per minute, last hour (one scale: 0–${max}/min)`]];
    put(box, doc.destinations.length === 0
      ? el('p', { class: 'muted' }, 'No destinations yet: INSERT INTO destinations … (see the README).')
      : el('table', { class: 'grid', id: 'overview' },
        el('thead', {}, el('tr', {}, heads.map(([t, c]) => el('th', { class: c }, t)))),
        el('tbody', {}, rows)));
    document.getElementById('refreshed').textContent = `updated ${fmtTime(doc.now)} · refreshes every 5 s`;
    state.timer = setTimeout(refresh, 5000);
  };
  await refresh();
}

// ---------------------------------------------------------------- orders

// {state: count} of the order's (event, destination) pairs, most urgent first
const STATE_ORDER = ['blocked', 'dead', 'delivering', 'pending', 'unrecorded', 'skipped', 'filtered', 'delivered'];

function syncSummary(sync) {
  const rank = k => (STATE_ORDER.indexOf(k) < 0 ? 99 : STATE_ORDER.indexOf(k));
  const parts = Object.entries(sync || {}).sort((a, b) => rank(a[0]) - rank(b[0]) || (a[0] < b[0] ? -1 : 1));
  if (parts.length === 0) return el('span', { class: 'muted' }, 'no events');
  return el('span', { class: 'sync' }, parts.map(([k, n]) => [badge(`${n} ${k}`, k), ' ']));
}

async function viewOrders(params) {
  const q = params.get('q') || '';
  const before = params.get('before') || '';
  const input = el('input', { type: 'search', name: 'q', id: 'search', value: q, size: 40,
    placeholder: 'external id, order number, customer email or order id' });
  const form = el('form', { class: 'searchbar', onsubmit: ev => { ev.preventDefault(); go('orders', { q: input.value.trim() }); } },
    input, el('button', { type: 'submit', class: 'primary' }, 'Search'));
  const box = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  setMain(el('h1', {}, 'Orders'), form, box);
  try {
    const doc = await api(`/api/orders${query({ q, before })}`);
    const rows = doc.orders.map(o => el('tr', { class: 'click', 'data-order': o.id, onclick: () => go(`order/${o.id}`) },
      el('td', {}, el('a', { href: `#/order/${o.id}` }, o.id)),
      el('td', {}, o.source), el('td', { class: 'long' }, o.external_id), el('td', { class: 'long' }, o.number || ''),
      el('td', { class: 'long' }, o.customer_email || ''), el('td', {}, o.status, o.financial_status ? ` · ${o.financial_status}` : ''),
      el('td', { class: 'num' }, o.total !== null ? `${o.total} ${o.currency || ''}` : ''),
      el('td', {}, fmtTime(o.created_at)), el('td', {}, syncSummary(o.sync))));
    put(box, 
      el('p', { class: 'muted small' }, q ? `Orders matching “${q}”` : 'Latest orders', before ? ` (older than order ${before})` : ''),
      rows.length ? el('table', { class: 'grid', id: 'orders' },
        el('thead', {}, el('tr', {}, [['id'], ['source'], ['external id'], ['number'], ['customer email'], ['status'], ['total', 'num'], ['received'], ['deliveries']].map(([t, c]) => el('th', { class: c }, t)))),
        el('tbody', {}, rows)) : el('p', {}, 'No order found.'),
      doc.next ? el('p', {}, el('a', { href: `#/orders${query({ q, before: doc.next })}`, id: 'older' }, 'Older orders →')) : null);
  } catch (e) {
    put(box, errorBox(e));
  }
}

function stateBadge(d) {
  if (d.state === 'pending' && d.attempts > 0) return badge('retrying', 'retrying');
  return badge(d.state);
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function showRaw(title, path) {
  const pre = el('pre', { class: 'raw' }, 'Loading…');
  const d = el('details', { open: true }, el('summary', {}, title), pre);
  api(path).then(doc => {
    let text = doc.payload;
    try { text = JSON.stringify(JSON.parse(doc.payload), null, 2); } catch (e) { /* as received */ }
    pre.textContent = text;
  }, e => { pre.textContent = String(e.message); });
  return d;
}

async function viewOrder(id) {
  setMain(el('p', { class: 'muted' }, 'Loading…'));
  let doc;
  try {
    doc = await api(`/api/orders/${encodeURIComponent(id)}`);
  } catch (e) {
    setMain(el('h1', {}, `Order ${id}`), errorBox(e));
    return;
  }
  const o = doc.order;
  const facts = el('dl', { class: 'facts' });
  for (const [k, v] of [['source', o.source], ['external id', o.external_id], ['number', o.number],
    ['customer email', o.customer_email],
    ['status', [o.status, o.financial_status, o.fulfillment_status].filter(Boolean).join(' · ')],
    ['total', o.total !== null ? `${o.total} ${o.currency || ''}` : ''], ['first seen', fmtTime(o.created_at)],
    ['last change', fmtTime(o.updated_at)]]) {
    facts.append(el('dt', {}, k), el('dd', { 'data-field': k }, v || '—'));
  }

  // deliveries: one row per event, one column per destination
  const dests = [...new Set(doc.deliveries.map(d => d.destination))].sort();
  // each replay of an event starts a new round of attempts
  const replays = new Map();
  for (const a of doc.actions) {
    if (a.action === 'replay') replays.set(`${a.position}/${a.destination}`, (replays.get(`${a.position}/${a.destination}`) || 0) + 1);
  }
  const cell = new Map(doc.deliveries.map(d => [`${d.position}/${d.destination}`, d]));
  const grid = el('table', { class: 'grid', id: 'deliveries' },
    el('thead', {}, el('tr', {}, el('th', {}, 'event'), dests.map(d => el('th', {}, d)))),
    el('tbody', {}, doc.events.map(e => el('tr', {},
      el('td', {}, el('strong', {}, e.type), el('div', { class: 'muted small long' }, `#${e.position} · ${e.webhook_id}`)),
      dests.map(dn => {
        const d = cell.get(`${e.position}/${dn}`);
        if (!d) return el('td', { class: 'muted' }, 'not subscribed');
        const rounds = 1 + (replays.get(`${e.position}/${dn}`) || 0);
        return el('td', { 'data-destination': dn, 'data-position': e.position, 'data-state': d.state,
          'data-attempts': d.attempts, class: 'delivery' },
          // a feed's delivery is the read that acknowledged it
          stateBadge(d), ' ', el('span', { class: 'muted small attempts' }, d.mode === 'poll'
            ? `${plural(d.attempts, 'read')} from its feed` : plural(d.attempts, 'attempt')),
          rounds > 1 ? el('span', { class: 'muted small' }, ` in ${rounds} rounds`) : null,
          d.state === 'skipped' ? el('div', { class: 'muted small' }, `skipped by ${d.skipped_by} ${fmtTime(d.skipped_at)}`) : null,
          d.state === 'unrecorded' ? el('div', { class: 'muted small' }, 'passed with no delivery or skip on record') : null,
          d.state === 'filtered' ? el('div', { class: 'muted small' }, 'left out by the destination\'s filter: never sent') : null,
          d.blocked_by ? el('div', { class: 'muted small' }, `waits for #${d.blocked_by}`) : null,
          d.state === 'pending' && d.next_at ? el('div', { class: 'muted small' }, `next ${fmtTime(d.next_at)}`) : null,
          d.last_error ? el('div', { class: 'small err' }, d.last_error) : null);
      })))));

  // the journey: everything that happened to the order, in time order
  const items = [];
  for (const i of doc.inbound) {
    items.push({ t: i.received_at, kind: 'webhook', node: el('span', {},
      badge(i.outcome), ` ${i.source} sent `, el('code', {}, i.topic),
      i.event_type ? ` → ${i.event_type}` : '', el('span', { class: 'muted small' }, ` · ${i.payload_bytes} bytes · `),
      el('a', { href: '#', onclick: ev => { ev.preventDefault(); ev.target.replaceWith(showRaw('body as received', `/api/orders/${o.id}/inbound/${i.id}`)); } }, 'show body')) });
  }
  for (const e of doc.events) {
    items.push({ t: e.created_at, kind: 'event', node: el('span', {},
      badge('emitted', 'event'), ` ${e.type} (#${e.position}, webhook-id ${e.webhook_id}) · `,
      el('a', { href: '#', onclick: ev => { ev.preventDefault(); ev.target.replaceWith(showRaw('envelope sent', `/api/orders/${o.id}/events/${e.position}`)); } }, 'show envelope')) });
  }
  for (const d of doc.deliveries) {
    if (!d.first) continue;
    items.push({ t: d.first.completed_at, kind: 'attempt', node: d.mode === 'poll'
      ? el('span', { 'data-attempt': `${d.destination}/${d.position}/feed` },
        badge('read', 'delivered'), ` ${d.destination} read #${d.position} from its feed (acknowledged by its next read)`)
      : el('span', { 'data-attempt': `${d.destination}/${d.position}/1` },
        badge(`${d.first.status}`, 'delivered'), ` ${d.destination} got #${d.position} at the first attempt`,
        el('span', { class: 'muted small' }, ` · ${d.first.duration_ms} ms`)) });
  }
  for (const a of doc.attempts) {
    const ok = a.http_status >= 200 && a.http_status < 300;
    items.push({ t: a.started_at, kind: 'attempt', node: el('span', { 'data-attempt': `${a.destination}/${a.position}/${a.attempt}` },
      badge(a.http_status ? String(a.http_status) : 'error', ok ? 'delivered' : 'dead'),
      ` ${a.destination}, attempt ${a.attempt} of #${a.position}`,
      el('span', { class: 'muted small' }, ` · ${a.duration_ms} ms`),
      a.error && a.error !== `HTTP ${a.http_status}` ? el('div', { class: 'small err' }, a.error) : null,
      a.excerpt ? el('div', { class: 'small excerpt' }, a.excerpt) : null) });
  }
  for (const a of doc.actions) {
    items.push({ t: a.at, kind: 'operator', node: el('span', { 'data-action': a.action },
      badge(a.action, 'operator'), ` ${a.actor} ${a.action === 'replay' ? 'replayed' : 'skipped'} #${a.position} for ${a.destination}`) });
  }
  items.sort((a, b) => new Date(a.t) - new Date(b.t));
  const journey = el('ol', { class: 'timeline', id: 'timeline' }, items.map(it =>
    el('li', { class: it.kind }, el('time', {}, fmtTime(it.t)), it.node)));
  const capped = ['inbound', 'events', 'actions'].filter(k => doc[k].length >= doc.limit);

  setMain(
    el('div', { class: 'titlebar' }, el('h1', { class: 'long' }, `Order ${o.number || o.external_id}`),
      el('a', { href: `#/order/${o.id}`, onclick: () => setTimeout(() => viewOrder(o.id)) }, 'refresh')),
    facts,
    el('h2', {}, 'Deliveries'),
    doc.events.length ? grid : el('p', { class: 'muted' }, 'No event was emitted for this order.'),
    el('h2', {}, 'Journey'),
    el('p', { class: 'muted small' }, 'Webhooks received (applied, stale or ignored; a duplicate is answered and not stored, so it does not show), events emitted, every delivery attempt and every operator action.'),
    capped.length ? el('p', { class: 'muted small' }, `Only the latest ${doc.limit} of: ${capped.join(', ')}.`) : null,
    journey);
}

// ---------------------------------------------------------------- dead letters

function localInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (isNaN(d)) return '';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

async function viewDead(params) {
  const f = { state: params.get('state') || 'dead', destination: params.get('destination') || '',
    since: params.get('since') || '', until: params.get('until') || '', before: params.get('before') || '' };
  if (state.destinations.length === 0) {
    try { state.destinations = (await api('/api/overview')).destinations.map(d => d.id); } catch (e) { /* the filter still works by hand */ }
  }
  const stateSel = el('select', { name: 'state', id: 'f-state' }, [['dead', 'dead'], ['blocked', 'blocked'], ['pending', 'retrying / pending']]
    .map(([v, t]) => el('option', { value: v, selected: v === f.state }, t)));
  const destSel = el('select', { name: 'destination', id: 'f-destination' }, el('option', { value: '' }, 'every destination'),
    state.destinations.map(d => el('option', { value: d, selected: d === f.destination }, d)));
  const since = el('input', { type: 'datetime-local', id: 'f-since', value: localInput(f.since) });
  const until = el('input', { type: 'datetime-local', id: 'f-until', value: localInput(f.until) });
  const toIso = v => (v ? new Date(v).toISOString() : '');
  const filter = el('form', { class: 'filters', onsubmit: ev => {
    ev.preventDefault();
    go('dead', { state: stateSel.value, destination: destSel.value, since: toIso(since.value), until: toIso(until.value) });
  } }, el('label', {}, 'state ', stateSel), el('label', {}, 'destination ', destSel),
  el('label', {}, 'event from ', since), el('label', {}, 'to ', until), el('button', { type: 'submit' }, 'Filter'));
  const msg = el('p', { id: 'action-result', class: 'notice', hidden: true });
  const box = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  setMain(el('h1', {}, 'Dead letters and blocked events'), filter, msg, box);

  let doc;
  try {
    doc = await api(`/api/deliveries${query({ state: f.state, destination: f.destination, since: f.since, until: f.until, before: f.before })}`);
  } catch (e) {
    put(box, errorBox(e));
    return;
  }
  const checks = [];
  const rows = doc.items.map(it => {
    const cb = el('input', { type: 'checkbox', 'aria-label': `select ${it.destination} #${it.position}` });
    checks.push({ cb, it });
    return el('tr', { 'data-destination': it.destination, 'data-position': it.position, 'data-order': it.order_id,
      'data-state': it.state, 'data-attempts': it.attempts },
      el('td', {}, cb), el('td', {}, it.destination),
      el('td', { class: 'long' }, el('a', { href: `#/order/${it.order_id}` }, it.number || it.external_id || it.order_id),
        el('div', { class: 'muted small' }, it.source || '')),
      el('td', {}, it.type || '', el('div', { class: 'muted small' }, `#${it.position}`)),
      el('td', {}, stateBadge(it), it.blocked_by ? el('div', { class: 'muted small' }, `waits for #${it.blocked_by} (${it.blocked_by_state || 'settled'})`) : null),
      el('td', { class: 'num attempts' }, it.attempts,
        it.round_attempts !== undefined && it.round_attempts !== it.attempts
          ? el('div', { class: 'muted small' }, `${it.round_attempts} since the last replay`) : null),
      el('td', { class: 'long' }, it.last_status ? `HTTP ${it.last_status} ` : '',
        it.last_error && it.last_error !== `HTTP ${it.last_status}` ? el('span', { class: 'small err' }, it.last_error) : ''),
      el('td', {}, fmtTime(it.event_created_at)), el('td', {}, fmtTime(it.updated_at)));
  });
  const selected = () => checks.filter(c => c.cb.checked).map(c => ({ destination: c.it.destination, position: c.it.position }));
  const scope = `${f.destination || 'every destination'}${f.since ? ', events from ' + fmtTime(f.since) : ''}${f.until ? ' to ' + fmtTime(f.until) : ''}`;
  const say = text => { msg.hidden = false; msg.textContent = text; };
  // asks the server how many events the action would touch (it changes
  // nothing), asks the operator with that number, then acts
  const act = async (verb, body, text) => {
    let n;
    try {
      const p = await api(`/api/deliveries/${verb}`, { body: Object.assign({ preview: true }, body) });
      n = verb === 'replay' ? p.replayed : p.skipped;
    } catch (e) {
      say(String(e.message));
      return;
    }
    if (n === 0) {
      say(`Nothing to ${verb}: no event matches any more (reload the list).`);
      return;
    }
    if (!(await confirmDialog(text(n)))) return;
    try {
      const r = await api(`/api/deliveries/${verb}`, { body });
      const done = verb === 'replay' ? r.replayed : r.skipped;
      sessionStorage.setItem('notice', `${verb === 'replay' ? 'Replayed' : 'Skipped'} ${plural(done, 'event')}.`);
      viewDead(params);
    } catch (e) {
      say(String(e.message));
    }
  };
  const none = verb => say(`Tick the events to ${verb} first (or use “${verb === 'replay' ? 'Replay' : 'Skip'} all matching”).`);
  const buttons = el('div', { class: 'actions' },
    el('button', { id: 'replay-selected', disabled: f.state !== 'dead', onclick: () => {
      const items = selected();
      if (!items.length) return none('replay');
      act('replay', { items }, n => `Replay ${plural(n, 'dead event')}? They keep their webhook-id; receivers dedupe on it.`);
    } }, 'Replay selected'),
    el('button', { id: 'skip-selected', disabled: f.state === 'pending', onclick: () => {
      const items = selected();
      if (!items.length) return none('skip');
      act('skip', { items }, n => `Skip ${plural(n, 'event')}? They will never be delivered; later events of their orders go on.`);
    } }, 'Skip selected'),
    el('button', { id: 'replay-all', disabled: f.state !== 'dead', onclick: () => act('replay',
      { matching: { destination: f.destination || null, since: f.since || null, until: f.until || null } },
      n => `Replay ${plural(n, 'dead event')} of ${scope}?`) }, 'Replay all matching'),
    el('button', { id: 'skip-all', disabled: f.state === 'pending', onclick: () => act('skip',
      { matching: { destination: f.destination || null, since: f.since || null, until: f.until || null, state: f.state } },
      n => `Skip ${plural(n, f.state + ' event')} of ${scope}? They will never be delivered.`) }, 'Skip all matching'));
  const all = el('input', { type: 'checkbox', 'aria-label': 'select all', onchange: ev => checks.forEach(c => { c.cb.checked = ev.target.checked; }) });
  put(box, 
    rows.length ? el('div', {}, buttons, el('table', { class: 'grid', id: 'dead' },
      el('thead', {}, el('tr', {}, el('th', {}, all), [['destination'], ['order'], ['event'], ['state'], ['attempts', 'num'], ['last error'], ['event time'], ['since']].map(([t, c]) => el('th', { class: c }, t)))),
      el('tbody', {}, rows))) : el('p', { id: 'none' }, `No ${f.state === 'pending' ? 'retrying' : f.state} event${f.destination ? ' for ' + f.destination : ''}.`),
    doc.next ? el('p', {}, el('a', { href: `#/dead${query(Object.assign({}, f, { before: `${doc.next.position}:${doc.next.destination}` }))}` }, 'Older →')) : null);
  const notice = sessionStorage.getItem('notice');
  if (notice) {
    sessionStorage.removeItem('notice');
    msg.hidden = false;
    msg.textContent = notice;
  }
}

// ---------------------------------------------------------------- sources and destinations

function secretCell(set, rotating, changed) {
  if (!set) return el('td', {}, badge('not set', 'dead'));
  return el('td', {}, badge('set', 'delivered'), rotating ? ' (rotating: previous secret still verifies)' : '',
    el('div', { class: 'muted small' }, changed ? `changed ${fmtTime(changed)}` : 'unchanged since the console was installed'));
}

// A push destination's Ed25519 (v1a) public key, for its receivers; the private key is never sent.
function withSigningKey(td, d) {
  if (d.signing_key_refused) td.append(el('div', { class: 'small err' }, 'signing key refused (see the log): not delivered to'));
  if (d.signing_public_key) td.append(el('div', { class: 'small' }, 'v1a public key: ', el('code', { class: 'pubkey' }, d.signing_public_key)));
  if (d.previous_signing_public_key) td.append(el('div', { class: 'small muted' }, 'previous (still signs): ', el('code', {}, d.previous_signing_public_key)));
  return td;
}

async function viewConfig() {
  setMain(el('p', { class: 'muted' }, 'Loading…'));
  try {
    const [sources, dests] = await Promise.all([api('/api/sources'), api('/api/destinations')]);
    setMain(el('h1', {}, 'Sources and destinations'),
      el('p', { class: 'muted small' }, 'Edit them with SQL (see the README); a destination\'s page (click its id) pauses, resumes, tests and replays it. Secret values are never shown.'),
      el('h2', {}, 'Sources'),
      el('table', { class: 'grid', id: 'sources' },
        el('thead', {}, el('tr', {}, ['id', 'kind', 'mode', 'enabled', 'secret', 'polling'].map(t => el('th', {}, t)))),
        el('tbody', {}, sources.map(s => el('tr', {},
          el('td', {}, el('strong', {}, s.id)), el('td', {}, s.kind), el('td', {}, s.mode),
          el('td', {}, s.enabled ? 'yes' : 'no'), secretCell(s.secret_set, s.rotating, s.secret_changed_at),
          el('td', { class: 'long' }, s.poll_url ? [el('div', {}, s.poll_url, s.poll_url_redacted ? ' (credentials hidden)' : ''),
            el('div', { class: 'muted small' }, `every ${s.poll_interval}${s.reconcile_interval ? ', reconcile ' + s.reconcile_interval : ''}; auth header ${s.poll_auth_set ? 'set' : 'not set'}`),
            s.last_poll_at ? el('div', { class: 'muted small' }, `last poll ${fmtTime(s.last_poll_at)}, ${s.polls} polls, ${s.poll_errors} errors`) : null,
            s.last_error ? el('div', { class: 'small err' }, s.last_error) : null] : el('span', { class: 'muted' }, '—')))))),
      el('h2', {}, 'Destinations'),
      el('table', { class: 'grid', id: 'destinations' },
        el('thead', {}, el('tr', {}, ['id', 'mode', 'enabled', 'url', 'secret', 'delivery', 'subscriptions'].map(t => el('th', {}, t)))),
        el('tbody', {}, dests.map(d => el('tr', {},
          el('td', {}, el('strong', {}, el('a', { href: `#/destination/${encodeURIComponent(d.id)}` }, d.id))), el('td', {}, d.mode),
          el('td', {}, d.enabled ? 'yes' : `no${d.disabled_reason ? ': ' + d.disabled_reason : ''}`,
            d.paused_at ? el('div', {}, badge('paused', 'blocked'), ` by ${d.paused_by}`) : null),
          el('td', { class: 'long' }, d.mode === 'poll' ? `GET /feeds/${d.id}` : d.url || '—', d.url_redacted ? ' (credentials hidden)' : ''),
          d.mode === 'poll' ? secretCell(d.feed_token_set, false, d.feed_token_changed_at) : withSigningKey(secretCell(d.secret_set, d.rotating, d.secret_changed_at), d),
          // a feed is read at its reader's pace: timeouts, retries and rate limits are a push destination's
          d.mode === 'poll'
            ? el('td', { class: 'small' }, 'read by its consumer (bearer feed token); reading past an event acknowledges it')
            : el('td', { class: 'small' }, `timeout ${d.timeout_ms} ms, ${d.max_in_flight} in flight, ${d.max_attempts} attempts over ${d.retry_window}, `,
              `schedule ${d.retry_schedule.join(', ')}, on dead: ${d.on_dead}`,
              d.rate_limit_per_s !== null && d.rate_limit_per_s !== undefined ? `, rate limit ${d.rate_limit_per_s}/s` : ''),
          el('td', { class: 'small' }, d.subscriptions.length ? d.subscriptions.join(', ') : 'every event type',
            d.filter ? el('div', { class: 'muted small' }, `filter ${d.filter}`) : null))))));
  } catch (e) {
    setMain(el('h1', {}, 'Sources and destinations'), errorBox(e));
  }
}

// ---------------------------------------------------------------- one destination: its actions

function actionText(a) {
  const x = a.detail || {};
  if (a.action === 'test') {
    return x.status ? `test event answered HTTP ${x.status}: ${x.body || ''}` : `test event got no answer: ${x.error || ''}`;
  }
  if (a.action === 'replay_range') return `replayed ${plural(x.events || 0, 'dead or blocked event')} from ${fmtTime(x.since)} to ${fmtTime(x.until)}`;
  if (a.action === 'filter') return x.filter ? `filter set to ${x.filter}` : 'filter removed';
  return a.action === 'pause' ? 'paused' : a.action === 'resume' ? 'resumed' : a.action;
}

// what the receiver said to a test event, as the operator reads it
function testAnswer(r) {
  if (!r.status) return el('div', { id: 'test-answer', class: 'error' }, `No answer: ${r.error || 'unknown error'} (after ${r.ms} ms)`);
  return el('div', { id: 'test-answer', class: r.status >= 200 && r.status < 300 ? 'notice' : 'error' },
    el('div', {}, el('strong', {}, `HTTP ${r.status}`), ` in ${r.ms} ms, webhook-id ${r.webhook_id}`),
    el('pre', { class: 'small long' }, r.body || '(empty body)'));
}

async function viewDestination(id) {
  const gen = state.gen;
  setMain(el('p', { class: 'muted' }, 'Loading…'));
  let d;
  try {
    d = (await api('/api/destinations')).find(x => x.id === id);
  } catch (e) {
    setMain(el('h1', {}, id), errorBox(e));
    return;
  }
  if (gen !== state.gen) return;
  if (!d) {
    setMain(el('h1', {}, id), el('p', { class: 'error' }, 'No such destination.'));
    return;
  }
  const msg = el('p', { id: 'dest-msg', class: 'notice', hidden: true });
  const answer = el('div', {});
  const say = (text, bad) => { msg.hidden = false; msg.className = bad ? 'error' : 'notice'; msg.textContent = text; };
  const post = async (action, body) => api(`/api/destinations/${encodeURIComponent(id)}/${action}`, { body: body || {} });
  const since = el('input', { id: 'replay-since', type: 'datetime-local', 'aria-label': 'since' });
  const until = el('input', { id: 'replay-until', type: 'datetime-local', 'aria-label': 'until' });
  const iso = v => v ? new Date(v).toISOString() : null;
  const push = d.mode === 'push';
  setMain(el('h1', {}, `Destination ${d.id} `, d.paused_at ? badge('paused', 'blocked') : badge(d.enabled ? 'running' : 'disabled', d.enabled ? 'delivered' : 'dead')),
    msg,
    el('p', { class: 'muted small' }, d.paused_at ? `Paused by ${d.paused_by} ${fmtTime(d.paused_at)}: nothing is sent; its backlog waits and goes on in order when resumed.` : 'Delivering.',
      d.filter ? ` Filter: ${d.filter}` : ' No filter: every event of its types.'),
    el('div', { class: 'actions' },
      el('button', { id: 'pause', hidden: !!d.paused_at, onclick: async () => {
        try { await post('pause'); render(); } catch (e) { say(String(e.message), true); }
      } }, 'Pause'),
      el('button', { id: 'resume', hidden: !d.paused_at, onclick: async () => {
        try { await post('resume'); render(); } catch (e) { say(String(e.message), true); }
      } }, 'Resume'),
      push ? el('button', { id: 'send-test', onclick: async ev => {
        ev.target.disabled = true;
        put(answer, el('p', { class: 'muted' }, 'Sending a test event…'));
        try { put(answer, testAnswer(await post('test'))); } catch (e) { put(answer, el('div', { id: 'test-answer', class: 'error' }, String(e.message))); }
        ev.target.disabled = false;
      } }, 'Send test event') : null),
    answer,
    push ? el('div', {}, el('h2', {}, 'Replay dead and blocked events'),
      el('div', { class: 'actions' }, el('label', {}, 'event time from ', since), el('label', {}, ' to ', until),
        el('button', { id: 'replay-window', onclick: async () => {
          const body = { since: iso(since.value), until: iso(until.value) };
          if (!body.since || !body.until) return say('Give both times.', true);
          try {
            const p = await post('replay', Object.assign({ preview: true }, body));
            if (p.replayed === 0) return say('No dead or blocked event of this destination in that window.');
            if (!(await confirmDialog(`Replay ${plural(p.replayed, 'dead or blocked event')} of ${id}? They keep their webhook-id.`))) return;
            const r = await post('replay', body);
            say(`Replayed ${plural(r.replayed, 'event')}.`);
          } catch (e) { say(String(e.message), true); }
        } }, 'Replay'))) : null,
    el('h2', {}, 'Timeline'),
    d.actions.length ? el('table', { class: 'grid', id: 'dest-actions' },
      el('thead', {}, el('tr', {}, ['time', 'who', 'what'].map(t => el('th', {}, t)))),
      el('tbody', {}, d.actions.map(a => el('tr', { 'data-action': a.action },
        el('td', {}, fmtTime(a.at)), el('td', {}, a.actor), el('td', { class: 'long' }, actionText(a))))))
      : el('p', { class: 'muted' }, 'No operator action on this destination yet.'));
}

// ---------------------------------------------------------------- start

async function render() {
  clearTimeout(state.timer);
  state.timer = null;
  state.gen++;
  const r = route();
  const view = r.parts[0] || 'overview';
  for (const a of document.querySelectorAll('nav a')) {
    a.classList.toggle('active', a.dataset.nav === (view === 'order' ? 'orders' : view === 'destination' ? 'config' : view));
  }
  if (view === 'orders') await viewOrders(r.params);
  else if (view === 'order' && r.parts[1]) await viewOrder(r.parts[1]);
  else if (view === 'dead') await viewDead(r.params);
  else if (view === 'config') await viewConfig();
  else if (view === 'destination' && r.parts[1]) await viewDestination(decodeURIComponent(r.parts[1]));
  else await viewOverview();
  document.body.dataset.view = view;
}

async function start() {
  try {
    const s = await api('/api/session');
    state.csrf = s.csrf || null;
    state.operator = s.operator || null;
    document.getElementById('logout-csrf').value = state.csrf || '';
    document.getElementById('who').textContent = state.operator ? `logged in as ${state.operator}` : '';
  } catch (e) {
    setMain(errorBox(e));
    return;
  }
  // back from the login page: where the operator was, with its filters
  const back = sessionStorage.getItem('return_to');
  sessionStorage.removeItem('return_to');
  if (back && back.startsWith('#/') && back !== location.hash) history.replaceState(null, '', `/console${back}`);
  window.addEventListener('hashchange', render);
  render();
}

start();
