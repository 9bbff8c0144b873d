// chargeauth console: plain JavaScript, no build step, no dependency.
// Every value from the server is written with textContent, never as HTML.
'use strict';

(function () {
  const REFRESH_MS = 2000;
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  };

  // --- talking to the server -------------------------------------------

  class HTTPError extends Error {
    constructor(status, body) {
      super((body && body.error) || ('HTTP ' + status));
      this.status = status;
      this.body = body;
    }
  }

  async function call(method, url, body) {
    const opt = { method, headers: { 'X-Requested-With': 'chargeauth-console', 'Accept': 'application/json' }, credentials: 'same-origin' };
    if (body !== undefined) {
      opt.headers['Content-Type'] = 'application/json';
      opt.body = JSON.stringify(body);
    }
    const res = await fetch(url, opt);
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    const node = res.headers.get('X-Chargeauth-Node');
    if (res.status === 401 && node) {
      // Forwarded to the node of a fleet that owns the session: the login
      // cookie is this node's only.
      throw new HTTPError(401, { error: 'the session belongs to node ' + node + ', which needs its own login: open its console' });
    }
    if (res.status === 401) {
      window.location.assign('/console/login');
      throw new HTTPError(401, data);
    }
    if (!res.ok) throw new HTTPError(res.status, data);
    return data;
  }

  // --- formatting --------------------------------------------------------

  const nf0 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
  const nf1 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  const nf2 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  function fmtCount(v) { return v === undefined || v === null ? '–' : nf0.format(v); }
  function fmtRate(v) {
    if (v === undefined || v === null) return '–';
    if (v === 0) return '0';
    if (v < 10) return nf2.format(v);
    if (v < 100) return nf1.format(v);
    return nf0.format(v);
  }
  function fmtMS(v) {
    if (v === undefined || v === null) return '–';
    if (v < 1) return nf2.format(v);
    if (v < 100) return nf1.format(v);
    return nf0.format(v);
  }
  // fmtAge returns [number, unit] for a duration in seconds.
  function fmtAge(s) {
    if (s === undefined || s === null) return ['–', ''];
    if (s === 0) return ['0', 's'];
    if (s < 10) return [nf1.format(s), 's'];
    if (s < 120) return [nf0.format(s), 's'];
    if (s < 7200) return [nf1.format(s / 60), 'min'];
    if (s < 172800) return [nf1.format(s / 3600), 'h'];
    return [nf1.format(s / 86400), 'd'];
  }
  // fmtDelta shows a time since acceptance: milliseconds under a second.
  function fmtDelta(s) {
    if (s < 1) return nf0.format(s * 1000) + ' ms';
    const [v, u] = fmtAge(s);
    return v + ' ' + u;
  }
  function fmtBytes(b) {
    if (b === undefined || b === null) return ['–', ''];
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return [i === 0 ? nf0.format(b) : (b < 10 ? nf2.format(b) : nf1.format(b)), units[i]];
  }
  const pad = (n, w) => String(n).padStart(w || 2, '0');
  // fmtTime shows a time in the browser's zone, sortable, to the second.
  function fmtTime(iso) {
    if (!iso) return '–';
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }
  function fmtMillis(iso) {
    const d = new Date(iso);
    return fmtTime(iso) + '.' + pad(d.getMilliseconds(), 3);
  }
  function timeEl(iso, precise) {
    const t = el('time', null, precise ? fmtMillis(iso) : fmtTime(iso));
    if (iso) { t.dateTime = iso; t.title = new Date(iso).toISOString(); }
    return t;
  }
  function hostOf(u) {
    try { return new URL(u).host; } catch (e) { return u || ''; }
  }
  // localInput turns an ISO time into a datetime-local value and back.
  function toLocalInput(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return '';
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + 'T' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }
  function fromLocalInput(v) {
    if (!v) return '';
    const d = new Date(v);
    return isNaN(d) ? '' : d.toISOString();
  }

  function setText(id, v) { const e = $(id); if (e) e.textContent = v; }
  function setPill(e, text, kind) {
    e.textContent = text;
    e.className = 'pill ' + (kind || '');
  }
  const stateKind = { pending: 'info', decided: 'warn', delivered: 'ok', failed: 'bad', redelivered: 'info' };
  const statusKind = { allowed: 'ok', not_allowed: 'bad', invalid: 'bad', unknown: 'warn' };

  function showResult(node, ok, text) {
    node.textContent = text;
    node.className = 'result ' + (ok ? 'ok' : 'bad');
  }

  // --- sparklines ----------------------------------------------------------

  const SVG = 'http://www.w3.org/2000/svg';
  function sparkline(container, values, label, unit, fmt) {
    container.textContent = '';
    const pts = values.map((v) => (v === null || v === undefined || !isFinite(v)) ? 0 : v);
    const w = 120, h = 32;
    const max = Math.max(0, ...pts);
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('role', 'img');
    const minutes = Math.max(1, Math.round(values.length * REFRESH_MS / 60000));
    svg.setAttribute('aria-label', label + ' over the last ' + minutes + ' min, at most ' + fmt(max) + ' ' + unit);
    if (pts.length >= 2) {
      const x = (i) => (i / (pts.length - 1)) * w;
      const y = (v) => h - 2 - (max > 0 ? (v / max) * (h - 4) : 0);
      let line = '';
      pts.forEach((v, i) => { line += (i ? ' L' : 'M') + x(i).toFixed(2) + ' ' + y(v).toFixed(2); });
      const area = document.createElementNS(SVG, 'path');
      area.setAttribute('d', line + ' L' + w + ' ' + h + ' L0 ' + h + ' Z');
      area.setAttribute('class', 'spark-area');
      const path = document.createElementNS(SVG, 'path');
      path.setAttribute('d', line);
      path.setAttribute('class', 'spark-line');
      path.setAttribute('vector-effect', 'non-scaling-stroke');
      svg.append(area, path);
    }
    const cap = el('div', 'spark-cap');
    cap.append(el('span', null, minutes + ' min'), el('span', 'num', 'max ' + fmt(max) + ' ' + unit));
    container.append(svg, cap);
  }

  // --- overview ------------------------------------------------------------

  let overviewTimer = null;
  let me = null;

  async function refreshOverview() {
    let o;
    try {
      o = await call('GET', '/console/api/overview');
    } catch (e) {
      setText('updated', 'Cannot reach the service: ' + e.message);
      $('updated').className = 'muted bad-text';
      return;
    }
    $('updated').className = 'muted';
    renderHeader(o);
    setText('accepted-rate', fmtRate(o.rates.accepted_per_s));
    setText('accepted-total', fmtCount(o.accepted_total));
    setText('refused-total', fmtCount(o.refused_total));
    setText('live', fmtCount(o.live_requests));
    const dr = o.rates.decisions_per_s || {};
    setText('decisions-rate', fmtRate(Object.values(dr).reduce((a, b) => a + b, 0)));
    const tbl = $('decisions-by-status');
    tbl.textContent = '';
    const head = tbl.createTHead().insertRow();
    head.append(el('td'), el('th', 'num', 'per s'), el('th', 'num', 'since start'));
    for (const c of head.cells) if (c.tagName === 'TH') c.scope = 'col';
    const body = tbl.createTBody();
    for (const st of ['allowed', 'not_allowed', 'invalid', 'unknown']) {
      const r = body.insertRow();
      const th = el('th');
      th.scope = 'row';
      th.append(el('span', 'dot ' + statusKind[st]), document.createTextNode(st.replace('_', ' ')));
      r.append(th, el('td', 'num', fmtRate(dr[st] || 0)), el('td', 'num', fmtCount((o.decisions_total || {})[st] || 0)));
    }
    const cr = o.rates.callbacks_per_s || {}, ct = o.callback_attempts_total || {};
    setText('delivered-rate', fmtRate(cr.delivered || 0));
    for (const k of ['delivered', 'retry', 'failed']) {
      setText('cb-' + k + '-rate', fmtRate(cr[k] || 0));
      setText('cb-' + k, fmtCount(ct[k] || 0));
    }
    $('card-callbacks').classList.toggle('alert', (cr.failed || 0) > 0);
    const [age, ageUnit] = fmtAge(o.oldest_undelivered_seconds);
    setText('oldest-age', age);
    setText('oldest-unit', ageUnit);
    $('card-backlog').classList.toggle('alert', o.oldest_undelivered_seconds > 300);
    setText('backlog', fmtCount(o.backlog));
    setText('pending', fmtCount(o.callbacks_pending));
    const a = o.authz;
    setText('authz-p99', fmtMS(a.p99_ms));
    setText('authz-p50', a.p50_ms === null ? '–' : fmtMS(a.p50_ms) + ' ms');
    setText('authz-calls', fmtRate(a.calls_per_s) + ' /s');
    setText('authz-inflight', fmtCount(a.in_flight));
    setPill($('breaker'), a.breaker || 'unknown', { closed: 'ok', 'half-open': 'warn', open: 'bad' }[a.breaker]);
    $('card-authz').classList.toggle('alert', a.breaker === 'open');
    const s = o.store;
    setPill($('store-state'), s.state, s.state === 'writable' ? 'ok' : 'bad');
    $('card-store').classList.toggle('alert', s.state !== 'writable');
    const [free, freeUnit] = fmtBytes(s.free_bytes);
    setText('disk-free', free);
    setText('disk-free-unit', freeUnit ? freeUnit + ' free' : 'free disk unknown');
    if (s.total_bytes) {
      $('disk-meter').hidden = false;
      const used = 1 - s.free_bytes / s.total_bytes;
      $('disk-fill').style.width = (used * 100).toFixed(1) + '%';
      $('disk-fill').classList.toggle('bad', used > 0.9);
      $('disk-meter').title = (used * 100).toFixed(1) + ' % of the disk used';
    }
    const [size, sizeUnit] = fmtBytes(s.used_bytes);
    setText('store-size', size + ' ' + sizeUnit);
    for (const st of ['pending', 'decided', 'delivered', 'failed']) setText('rec-' + st, fmtCount((o.records || {})[st]));
    renderACL(o.acl);
    renderNode(o);
    renderActions(o.actions || []);
    const sr = o.series;
    sparkline($('spark-accepted'), sr.accepted_per_s || [], 'Accepts per second', '/s', fmtRate);
    sparkline($('spark-decisions'), sr.decisions_per_s || [], 'Decisions per second', '/s', fmtRate);
    sparkline($('spark-delivered'), sr.delivered_per_s || [], 'Callbacks delivered per second', '/s', fmtRate);
    sparkline($('spark-oldest'), sr.oldest_undelivered_seconds || [], 'Age of the oldest undelivered callback', 's', (v) => nf0.format(v));
    sparkline($('spark-authz'), sr.authz_p99_ms || [], 'Authorization p99 latency', 'ms', fmtMS);
    setText('updated', 'Updated ' + fmtTime(o.at).slice(11) + ' · refreshes every ' + REFRESH_MS / 1000 + ' s · rates over ' + o.window_seconds + ' s');
  }

  function renderNode(o) {
    setPill($('node-ready'), o.ready ? 'ready' : 'not ready: ' + o.health, o.ready ? 'ok' : 'bad');
    $('card-node').classList.toggle('alert', !o.ready);
    setText('node-version', o.version || '–');
    setText('node-who', o.who || '–');
    if (o.started_at) {
      const [v, u] = fmtAge((new Date(o.at) - new Date(o.started_at)) / 1000);
      setText('uptime', v);
      setText('uptime-unit', u + ' up');
    }
  }

  function renderHeader(o) {
    me = o.who;
    $('logout').hidden = !(o.who && o.who.startsWith('console:'));
    const st = $('node-state');
    if (o.ready) setPill(st, 'Ready', 'ok');
    else setPill(st, 'Not ready: ' + o.health, 'bad');
    st.title = 'chargeauth ' + (o.version || '') + (o.who ? ' · you are ' + o.who : '');
  }

  function renderACL(acl) {
    const btn = $('acl-reload');
    if (!acl) {
      setText('acl-version', 'external');
      setText('acl-entries', '–');
      setText('acl-loaded', '–');
      setText('acl-failures', '–');
      btn.disabled = true;
      btn.title = 'The authorization service is external: reload its ACL there.';
      return;
    }
    setText('acl-version', acl.version);
    $('acl-version').title = acl.version;
    setText('acl-entries', fmtCount(acl.entries));
    setText('acl-loaded', acl.loaded_at_unix ? fmtTime(new Date(acl.loaded_at_unix * 1000).toISOString()) : '–');
    setText('acl-failures', fmtCount(acl.reload_failures));
    btn.disabled = !acl.reloadable;
    btn.title = acl.reloadable ? 'Read the --acl file again now' : 'No --acl file: the service runs with the built-in sample ACL.';
  }

  function renderActions(actions) {
    const tb = $('actions').tBodies[0];
    tb.textContent = '';
    $('actions-empty').hidden = actions.length > 0;
    $('actions').hidden = actions.length === 0;
    for (const a of actions) {
      const r = tb.insertRow();
      const res = el('td');
      res.append(el('span', 'dot ' + (a.ok ? 'ok' : 'bad')), document.createTextNode(a.result));
      r.append(td(timeEl(a.at)), el('td', 'mono', a.who), el('td', null, a.what), res);
    }
  }

  // attemptsCell is right-aligned; data-unit names it where a phone shows
  // the row as a block.
  function attemptsCell(n) {
    const c = el('td', 'num c-att', fmtCount(n));
    c.dataset.unit = n === 1 ? 'attempt' : 'attempts';
    return c;
  }

  // stationCell shows a station id's first group; the whole id is its title.
  function stationCell(id) {
    const c = el('td', 'mono opt', (id || '').split('-')[0] + '…');
    c.title = id || '';
    return c;
  }

  function td(child, cls) {
    const c = el('td', cls);
    c.append(child);
    return c;
  }

  $('acl-reload').addEventListener('click', async () => {
    const btn = $('acl-reload');
    btn.disabled = true;
    try {
      const r = await call('POST', '/console/api/acl/reload');
      showResult($('acl-result'), true, 'ACL ' + r.action.result + ' (' + r.action.who + ', ' + fmtTime(r.action.at) + ')');
    } catch (e) {
      showResult($('acl-result'), false, 'Reload failed: ' + e.message);
    } finally {
      btn.disabled = false;
      refreshOverview();
    }
  });

  // --- sessions list -------------------------------------------------------

  let listState = { params: new URLSearchParams(), cursors: [''], page: 0, next: '' };

  function filtersFromForm() {
    const p = new URLSearchParams();
    const st = $('f-state').value;
    if (st) p.set('state', st);
    const since = fromLocalInput($('f-since').value);
    if (since) p.set('since', since);
    const until = fromLocalInput($('f-until').value);
    if (until) p.set('until', until);
    const host = $('f-host').value.trim();
    if (host) p.set('callback_host', host);
    return p;
  }

  function formFromFilters(p) {
    $('f-state').value = p.get('state') || '';
    $('f-since').value = p.get('since') ? toLocalInput(p.get('since')) : '';
    $('f-until').value = p.get('until') ? toLocalInput(p.get('until')) : '';
    $('f-host').value = p.get('callback_host') || '';
  }

  $('filters').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = filtersFromForm().toString();
    const target = '#/sessions' + (q ? '?' + q : '');
    if (location.hash === target) route(); else location.hash = target;
  });
  $('f-reset').addEventListener('click', () => { location.hash = '#/sessions'; });
  $('page-older').addEventListener('click', () => {
    if (!listState.next) return;
    listState.cursors[listState.page + 1] = listState.next;
    listState.page++;
    loadSessions();
  });
  $('page-newer').addEventListener('click', () => {
    if (listState.page === 0) return;
    listState.page--;
    loadSessions();
  });

  const PAGE = 25;

  async function loadSessions() {
    const p = new URLSearchParams(listState.params);
    p.set('limit', String(PAGE));
    const cursor = listState.cursors[listState.page];
    if (cursor) p.set('cursor', cursor);
    const tb = $('sessions').tBodies[0];
    $('sessions').setAttribute('aria-busy', 'true');
    let data;
    try {
      data = await call('GET', '/sessions?' + p.toString());
    } catch (e) {
      showResult($('list-result'), false, 'Cannot list sessions: ' + e.message);
      $('sessions').removeAttribute('aria-busy');
      return;
    }
    tb.textContent = '';
    for (const s of data.sessions) {
      const r = tb.insertRow();
      r.dataset.id = s.request_id;
      r.dataset.state = s.state;
      const link = el('a', 'mono', s.request_id);
      link.href = '#/sessions/' + encodeURIComponent(s.request_id);
      const state = el('span');
      setPill(state, s.state, stateKind[s.state]);
      const decision = s.status ? el('span', 'dot-label') : el('span', 'muted', '–');
      if (s.status) decision.append(el('span', 'dot ' + (statusKind[s.status] || '')), document.createTextNode(s.status.replace('_', ' ')));
      const err = el('td', 'opt clip c-err', s.last_error || '');
      if (s.last_error) err.title = s.last_error;
      r.append(td(timeEl(s.accepted_at), 'c-at'), td(link, 'c-id'), stationCell(s.station_id), el('td', 'mono c-host', hostOf(s.callback_url)),
        td(state, 'c-state'), td(decision, 'c-dec'), attemptsCell(s.callback_attempts), err);
    }
    $('sessions').removeAttribute('aria-busy');
    $('sessions-empty').hidden = data.sessions.length > 0;
    listState.next = data.next_cursor || '';
    $('page-older').disabled = !listState.next;
    $('page-newer').disabled = listState.page === 0;
    const from = listState.page * PAGE + 1;
    setText('page-info', data.sessions.length ? 'Showing ' + nf0.format(from) + '–' + nf0.format(from + data.sessions.length - 1) : '');
    $('sessions').dataset.count = String(data.sessions.length);
  }

  $('bulk-redeliver').addEventListener('click', async () => {
    const p = listState.params;
    const req = { since: p.get('since') || undefined, until: p.get('until') || undefined, callback_host: p.get('callback_host') || '' };
    let count;
    try {
      count = await call('POST', '/console/api/redeliver-failed', Object.assign({ dry_run: true }, req));
    } catch (e) {
      showResult($('list-result'), false, 'Cannot count the failed sessions: ' + e.message);
      return;
    }
    if (count.count === 0) {
      showResult($('list-result'), true, 'No failed session ' + count.scope + ': nothing to redeliver.');
      return;
    }
    const n = count.count;
    const text = 'Redeliver ' + nf0.format(n) + ' failed session' + (n === 1 ? '' : 's') + ' ' + count.scope + '? ' +
      'Each callback is sent again on a fresh schedule; receivers dedupe on webhook-id.';
    if (!(await confirmDialog('Redeliver ' + nf0.format(n) + ' session' + (n === 1 ? '' : 's') + '?', text, 'Redeliver ' + nf0.format(n)))) return;
    try {
      const r = await call('POST', '/console/api/redeliver-failed', Object.assign({ expect: n }, req));
      showResult($('list-result'), true, 'Redeliver failed sessions: ' + r.action.result + ' (' + r.action.who + ', ' + fmtTime(r.action.at) + ')');
    } catch (e) {
      showResult($('list-result'), false, 'Redelivery refused: ' + e.message);
    }
    loadSessions();
  });

  function confirmDialog(title, text, okLabel) {
    const d = $('confirm');
    setText('confirm-title', title);
    setText('confirm-text', text);
    setText('confirm-ok', okLabel);
    d.returnValue = '';
    return new Promise((resolve) => {
      d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
      d.showModal();
      $('confirm-cancel').focus();
    });
  }

  // --- one session ---------------------------------------------------------

  let currentID = '';

  async function loadSession(id) {
    currentID = id;
    setText('s-id', id);
    $('s-result').textContent = '';
    $('s-result').className = 'result';
    let s;
    try {
      s = await call('GET', '/sessions/' + encodeURIComponent(id));
    } catch (e) {
      showResult($('s-result'), false, e.status === 404 ? 'No session ' + id + ' on this node.' : 'Cannot read the session: ' + e.message);
      return;
    }
    renderSession(s);
  }

  function renderSession(s) {
    setPill($('s-state'), s.state, stateKind[s.state]);
    $('s-redeliver').disabled = s.state !== 'failed';
    $('s-redeliver').title = s.state === 'failed' ? 'Send the callback again on a fresh schedule' : 'Only a failed session can be redelivered';
    const dl = $('s-facts');
    dl.textContent = '';
    const fact = (k, v, cls) => {
      const dd = el('dd', cls);
      if (v instanceof Node) dd.append(v); else dd.textContent = (v === undefined || v === null || v === '') ? '–' : v;
      dl.append(el('dt', null, k), dd);
    };
    fact('Station', s.station_id, 'mono');
    fact('Driver token', s.driver_token, 'mono');
    fact('Callback URL', s.callback_url, 'mono wrap');
    let decision = '–';
    if (s.status) {
      decision = el('span', 'dot-label');
      decision.append(el('span', 'dot ' + (statusKind[s.status] || '')), document.createTextNode(s.status.replace('_', ' ') +
        (s.reason ? ' (' + s.reason + ')' : '') + (s.decided_by ? ', by ' + s.decided_by : '')));
    }
    fact('Decision', decision);
    fact('Decide by', timeEl(s.decide_by));
    fact('Callback attempts', fmtCount(s.callback_attempts), 'num-left');
    if (s.next_attempt_at) fact('Next attempt', timeEl(s.next_attempt_at));
    if (s.redelivered_at) fact('Redelivered', timeEl(s.redelivered_at));
    if (s.last_error) fact('Last error', s.last_error, 'bad-text');

    const ol = $('s-transitions');
    ol.textContent = '';
    const tr = s.transitions || [];
    const t0 = tr.length ? new Date(tr[0].at) : null;
    for (const t of tr) {
      const li = el('li', 'tl-' + t.state);
      const st = el('span');
      setPill(st, t.state, stateKind[t.state]);
      li.append(st, timeEl(t.at, true));
      if (t0 && t !== tr[0]) li.append(el('span', 'muted num', '+' + fmtDelta((new Date(t.at) - t0) / 1000)));
      ol.append(li);
    }

    const tb = $('s-attempts').tBodies[0];
    tb.textContent = '';
    const attempts = s.attempts || [];
    const first = (s.callback_attempts || attempts.length) - attempts.length + 1;
    let withAnswer = 0;
    attempts.forEach((a, i) => {
      const r = tb.insertRow();
      const res = el('span');
      if (a.error) {
        setPill(res, a.status_code ? 'HTTP ' + a.status_code : 'error', 'bad');
      } else {
        setPill(res, 'HTTP ' + (a.status_code || '2xx'), 'ok');
      }
      const resCell = td(res);
      if (a.error) resCell.append(el('span', 'err', ' ' + a.error));
      // The receiver's answer, under whichever name the store gives it.
      let answer = ['response', 'response_snippet', 'response_body', 'answer', 'body']
        .map((k) => a[k]).find((v) => v !== undefined && v !== null);
      if (answer !== undefined && typeof answer !== 'string') answer = JSON.stringify(answer);
      if (answer) withAnswer++;
      const ans = el('td', 'mono clip answer', answer || '–');
      if (answer) ans.title = answer;
      const dur = typeof a.duration_ms === 'number' ? fmtMS(a.duration_ms) + ' ms' : (a.duration || '–');
      r.append(el('td', 'num', String(first + i)), td(timeEl(a.at, true)), resCell, el('td', 'num', dur), ans);
    });
    $('s-attempts').hidden = attempts.length === 0;
    let note = '';
    if (attempts.length === 0) note = 'No callback attempt yet.';
    else if (s.callback_attempts > attempts.length) note = 'The last ' + attempts.length + ' of ' + s.callback_attempts + ' attempts are kept.';
    if (attempts.length && !withAnswer) note += (note ? ' ' : '') + 'The receiver\u2019s answers were not recorded for these attempts.';
    setText('s-attempts-note', note);
    $('view-session').dataset.state = s.state;
  }

  $('s-redeliver').addEventListener('click', async () => {
    const id = currentID;
    if (!(await confirmDialog('Redeliver this session?', 'Send the callback of ' + id + ' again, on a fresh schedule?', 'Redeliver'))) return;
    try {
      const r = await call('POST', '/console/api/redeliver', { id });
      showResult($('s-result'), true, 'Redeliver: ' + r.action.result + ' (' + r.action.who + ', ' + fmtTime(r.action.at) + ')');
    } catch (e) {
      showResult($('s-result'), false, 'Redeliver refused: ' + e.message);
    }
    if (currentID === id) {
      try { renderSession(await call('GET', '/sessions/' + encodeURIComponent(id))); } catch (e) { /* shown above */ }
    }
  });

  $('logout').addEventListener('click', async () => {
    try { await call('POST', '/console/logout'); } catch (e) { /* go to the login page anyway */ }
    window.location.assign('/console/login');
  });

  // --- routing ---------------------------------------------------------------

  function show(view) {
    for (const v of ['overview', 'sessions', 'session', 'error']) $('view-' + v).hidden = v !== view;
    $('nav-overview').toggleAttribute('aria-current', view === 'overview');
    $('nav-sessions').toggleAttribute('aria-current', view === 'sessions' || view === 'session');
    if (view === 'overview' || view === 'sessions' || view === 'session') {
      for (const n of ['nav-overview', 'nav-sessions']) {
        if ($(n).hasAttribute('aria-current')) $(n).setAttribute('aria-current', 'page');
      }
    }
  }

  function route() {
    const h = location.hash || '#/';
    const [path, query] = h.slice(1).split('?');
    clearInterval(overviewTimer);
    overviewTimer = null;
    if (path === '/' || path === '') {
      show('overview');
      document.title = 'Overview · chargeauth console';
      refreshOverview();
      overviewTimer = setInterval(refreshOverview, REFRESH_MS);
    } else if (path === '/sessions') {
      show('sessions');
      document.title = 'Sessions · chargeauth console';
      listState = { params: new URLSearchParams(query || ''), cursors: [''], page: 0, next: '' };
      formFromFilters(listState.params);
      $('bulk').hidden = listState.params.get('state') !== 'failed';
      $('list-result').textContent = '';
      $('list-result').className = 'result';
      loadSessions();
    } else if (path.startsWith('/sessions/')) {
      show('session');
      const id = decodeURIComponent(path.slice('/sessions/'.length));
      document.title = 'Session ' + id + ' · chargeauth console';
      loadSession(id);
    } else {
      show('error');
      setText('error-text', 'No such page: ' + h);
    }
  }

  window.addEventListener('hashchange', route);
  // The header's state: read once even when the overview is not shown.
  call('GET', '/console/api/overview').then(renderHeader).catch(() => {});
  route();
})();
