// Consort dashboard: plain JavaScript, no build step. It reads the node it is served from over
// the public API (/v1/status, /v1/peers, /v1/kv, /v1/services) and stays live over the /v1/ws
// WebSocket ("listen" for group events and messages, "watch" for state changes), reconnecting
// with backoff. Everything is built with DOM calls; nothing received is parsed as HTML.
(() => {
  'use strict';

  const REFRESH_MS = 2000;
  const LOG_LIMIT = 400;
  const RESERVED = '@consort/';

  const dash = {
    token: null,
    status: null,
    peers: new Map(),        // id -> peer entry of /v1/peers
    services: {},            // name -> [provider ids]
    entries: new Map(),      // key -> {value, version, origin, deleted}
    closed: new Set(),       // folder paths the user collapsed
    leafs: new Map(),        // key -> leaf element, for updates in place
    ws: null,
    retry: 0,
    paused: false,
    held: [],
  };

  // ---- small helpers ----

  const $ = (selector, root = document) => root.querySelector(selector);

  /** An element with attributes and children (strings become text nodes). */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'class') node.className = value;
      else if (name === 'dataset') Object.assign(node.dataset, value);
      else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? '' : value);
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const short = (id) => (id ? String(id).slice(0, 8) : '');
  const nameOf = (id) => {
    if (!id) return 'none';
    const peer = dash.peers.get(id);
    return peer ? peer.name : short(id);
  };
  const compact = (value) => JSON.stringify(value);
  const clock = () => {
    const d = new Date();
    const pad = (n, w = 2) => String(n).padStart(w, '0');
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  };
  const ms = (x, signed) => {
    if (x === null || x === undefined) return '—';
    const text = Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2);
    return (signed && x > 0 ? '+' : '') + text + ' ms';
  };

  /** "<hlc>-<origin>" ordered as the store orders versions (hlc first, then origin). */
  function compareVersions(a, b) {
    const [ha, oa = ''] = String(a).split('-');
    const [hb, ob = ''] = String(b).split('-');
    try {
      const x = BigInt(ha);
      const y = BigInt(hb);
      if (x !== y) return x < y ? -1 : 1;
    } catch (_) {
      return 0;
    }
    return oa < ob ? -1 : oa > ob ? 1 : 0;
  }

  /** A key as a URL path: each segment percent-encoded, the slashes kept. */
  const keyPath = (key) => key.split('/').map(encodeURIComponent).join('/');

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (dash.token) headers.Authorization = 'Bearer ' + dash.token;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, 'the node does not answer');
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = text;
    }
    if (response.status === 401) askToken();
    if (!response.ok) {
      const message = data && data.error ? data.error : `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message);
    }
    return data;
  }

  // ---- token ----

  const tokenSlot = () => 'consort-token:' + location.host;

  function initToken() {
    const url = new URL(location.href);
    const given = url.searchParams.get('token');
    if (given) {
      sessionStorage.setItem(tokenSlot(), given);
      url.searchParams.delete('token');
      history.replaceState(null, '', url.pathname + url.search + url.hash);
    }
    dash.token = sessionStorage.getItem(tokenSlot());
  }

  function askToken() {
    const dialog = $('#token-dialog');
    if (!dialog.open && typeof dialog.showModal === 'function') dialog.showModal();
  }

  // ---- header, peers, services ----

  async function refresh() {
    try {
      const [status, peers, services] = await Promise.all([
        api('GET', '/v1/status'),
        api('GET', '/v1/peers'),
        api('GET', '/v1/services'),
      ]);
      dash.status = status;
      dash.peers = new Map(peers.map((p) => [p.id, p]));
      dash.services = services || {};
      renderHeader();
      renderPeers();
      renderServices();
      renderTargets();
      renderOrigins();
    } catch (e) {
      if (e.status !== 401) setConn(dash.ws && dash.ws.readyState === 1 ? 'live' : 'offline');
    }
  }

  let refreshSoonTimer = null;
  function refreshSoon() {
    clearTimeout(refreshSoonTimer);
    refreshSoonTimer = setTimeout(refresh, 120);
  }

  function renderHeader() {
    const s = dash.status;
    if (!s) return;
    $('#node-name').textContent = s.node.name;
    $('#node-id').textContent = s.node.id;
    $('#group').textContent = s.group;
    $('#leader-name').textContent = s.leader ? nameOf(s.leader) : 'none';
    $('#leader-box').dataset.none = String(!s.leader);
    $('#term').textContent = s.term;
    document.title = `${s.node.name} · Consort`;
  }

  const STATE_ORDER = { alive: 0, suspect: 1, down: 2, left: 3 };

  function renderPeers() {
    const tbody = $('#peers tbody');
    const peers = [...dash.peers.values()].sort(
      (a, b) => (STATE_ORDER[a.state] ?? 9) - (STATE_ORDER[b.state] ?? 9) || a.name.localeCompare(b.name) || a.id.localeCompare(b.id),
    );
    const rows = peers.map((p) =>
      el('tr', { dataset: { peer: p.id, name: p.name, state: p.state, leader: String(p.is_leader), self: String(p.is_self) } },
        el('td', {},
          el('div', { class: 'peer-name' },
            p.name,
            p.is_leader && el('span', { class: 'badge leader', title: 'leader' }, '♛ leader'),
            p.is_self && el('span', { class: 'badge self' }, 'this node')),
          el('div', { class: 'peer-sub' }, `${p.id} · ${p.addr}`)),
        el('td', {}, el('span', { class: 'state ' + p.state }, p.state)),
        el('td', { class: 'num' }, p.is_self ? '—' : ms(p.rtt_ms)),
        el('td', { class: 'num' }, p.is_self ? '—' : ms(p.clock_offset_ms, true)),
        el('td', {}, p.services.length ? p.services.map((s) => el('span', { class: 'chip' }, s)) : el('span', { class: 'muted' }, '—'))));
    tbody.replaceChildren(...rows);
    const counts = {};
    for (const p of peers) counts[p.state] = (counts[p.state] || 0) + 1;
    $('#peer-summary').textContent = ['alive', 'suspect', 'down', 'left']
      .filter((s) => counts[s])
      .map((s) => `${counts[s]} ${s}`)
      .join(' · ');
  }

  function renderServices() {
    const list = $('#services');
    const names = Object.keys(dash.services).sort();
    if (!names.length) {
      list.replaceChildren(el('li', { class: 'empty' }, 'No services yet'));
    } else {
      list.replaceChildren(...names.map((name) =>
        el('li', { dataset: { service: name } },
          el('button', { class: 'chip service-name', type: 'button', title: 'Call it', onclick: () => prepareCall(name) }, name),
          el('span', { class: 'muted' }, 'on'),
          dash.services[name].map((id) => el('span', { class: 'badge' }, nameOf(id))))));
    }
    $('#known-services').replaceChildren(...names.map((name) => el('option', { value: name })));
  }

  function renderTargets() {
    const select = $('#send-form select[name=to]');
    const current = select.value;
    const options = [
      el('option', { value: 'broadcast' }, "broadcast (the leader's, to every member)"),
      el('option', { value: 'leader' }, 'the leader'),
      el('option', { value: 'all' }, 'all other members'),
      ...[...dash.peers.values()]
        .filter((p) => !p.is_self && p.state !== 'left')
        .map((p) => el('option', { value: p.id }, `${p.name} (${short(p.id)})`)),
    ];
    select.replaceChildren(...options);
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  }

  /** Names the writers in the tree once the peers are known. */
  function renderOrigins() {
    for (const [key, leaf] of dash.leafs) {
      const e = dash.entries.get(key);
      if (e) leaf.querySelector('.origin').textContent = nameOf(e.origin);
    }
  }

  // ---- connection ----

  function setConn(state, text) {
    const conn = $('#conn');
    conn.dataset.state = state;
    $('#conn-text').textContent = text || state;
  }

  function connect() {
    const url = new URL('/v1/ws', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    if (dash.token) url.searchParams.set('token', dash.token);
    setConn('connecting');
    const ws = new WebSocket(url);
    dash.ws = ws;
    ws.onopen = async () => {
      dash.retry = 0;
      setConn('live');
      // Peers first, so that events name them; then watch, then read the whole state: a change
      // in between shows up in both, and versions decide which one stays.
      await refresh();
      if (ws.readyState !== WebSocket.OPEN) return;
      ws.send(JSON.stringify({ op: 'listen' }));
      ws.send(JSON.stringify({ op: 'watch', prefix: '' }));
      loadState();
    };
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      onFrame(frame);
    };
    ws.onclose = () => {
      if (dash.ws !== ws) return;
      const wait = Math.min(5000, 250 * 2 ** dash.retry);
      dash.retry += 1;
      setConn('offline', `reconnecting in ${Math.ceil(wait / 1000)} s`);
      setTimeout(connect, wait);
      refresh();
    };
  }

  function onFrame(f) {
    switch (f.type) {
      case 'changed':
        applyEntry(f, true);
        if ($('#log-changes').checked) {
          log('change', 'change', f.deleted ? [keySpan(f.key), ' deleted'] : [keySpan(f.key), ' = ', body(f.value)],
            `by ${nameOf(f.origin)}`, { key: f.key });
        }
        break;
      case 'pulse':
        log('pulse', 'pulse', [keySpan(f.key), ' ', body(f.value)], `from ${nameOf(f.origin)}`, { key: f.key });
        break;
      case 'lagged':
        log('error', 'lagged', `missed ${f.missed} changes; reloading the state`);
        loadState();
        break;
      case 'peer_added':
        log('peer', 'peer', `${f.peer.name} joined`, `${short(f.peer.id)} at ${f.peer.addr}`);
        refreshSoon();
        break;
      case 'peer_removed':
        log('peer', 'peer', `${f.peer.name} is gone`, `${short(f.peer.id)}`);
        refreshSoon();
        break;
      case 'leader_changed':
        log('leader', 'leader', f.leader ? `${nameOf(f.leader)} leads` : 'no leader', `term ${f.term}`);
        if (dash.status) {
          dash.status.leader = f.leader;
          dash.status.term = f.term;
          renderHeader();
        }
        refreshSoon();
        break;
      case 'promote_leader':
        log('leader', 'role', 'this node became the leader');
        break;
      case 'demote_leader':
        log('leader', 'role', 'this node stopped leading');
        break;
      case 'promote_follower':
        log('leader', 'role', `this node follows ${nameOf(f.leader)}`);
        break;
      case 'demote_follower':
        log('leader', 'role', `this node stopped following ${nameOf(f.leader)}`);
        break;
      case 'leader_message':
        log('broadcast', 'broadcast', [`${nameOf(f.from)}: `, body(f.body)], `term ${f.term}${f.reliable ? ' · reliable' : ''}`);
        break;
      case 'peer_message':
        log('message', f.kind, [`${nameOf(f.from)}: `, body(f.body)], f.reliable ? 'reliable' : '');
        break;
      case 'error':
        log('error', 'error', f.error);
        break;
      default:
        break;
    }
  }

  // ---- state tree ----

  async function loadState() {
    try {
      const list = await api('GET', '/v1/kv');
      const seen = new Set();
      for (const entry of list) {
        seen.add(entry.key);
        applyEntry(entry, false);
      }
      // Keys gone while disconnected.
      for (const [key, entry] of dash.entries) {
        if (!seen.has(key) && !entry.deleted) dash.entries.delete(key);
      }
      renderTree();
    } catch (e) {
      $('#tree').replaceChildren(el('p', { class: 'empty' }, `Cannot read the state: ${e.message}`));
    }
  }

  /** Takes an entry or a change if it is newer than what is shown. */
  function applyEntry(e, live) {
    const current = dash.entries.get(e.key);
    if (current && compareVersions(current.version, e.version) >= 0) return;
    const wasShown = current && !current.deleted;
    dash.entries.set(e.key, { value: e.value, version: e.version, origin: e.origin, deleted: !!e.deleted });
    if (!live) return;
    const leaf = dash.leafs.get(e.key);
    if (wasShown && !e.deleted && leaf) {
      fillLeaf(leaf, e.key);
      flash(leaf);
    } else {
      renderTreeSoon();
    }
  }

  let treeTimer = null;
  function renderTreeSoon() {
    clearTimeout(treeTimer);
    treeTimer = setTimeout(renderTree, 30);
  }

  function visibleKeys() {
    const filter = $('#filter').value.trim().toLowerCase();
    return [...dash.entries.entries()]
      .filter(([key, e]) => !e.deleted && !key.startsWith(RESERVED) && (!filter || key.toLowerCase().includes(filter)))
      .map(([key]) => key)
      .sort();
  }

  function renderTree() {
    const keys = visibleKeys();
    const root = { folders: new Map(), leafs: [] };
    for (const key of keys) {
      const parts = key.split('/');
      let node = root;
      for (const part of parts.slice(0, -1)) {
        if (!node.folders.has(part)) node.folders.set(part, { folders: new Map(), leafs: [] });
        node = node.folders.get(part);
      }
      node.leafs.push(key);
    }
    dash.leafs = new Map();
    const tree = $('#tree');
    const total = [...dash.entries.entries()].filter(([k, e]) => !e.deleted && !k.startsWith(RESERVED)).length;
    $('#key-summary').textContent = `${total} key${total === 1 ? '' : 's'}`;
    $('#known-keys').replaceChildren(...keys.map((key) => el('option', { value: key })));
    if (!keys.length) {
      tree.replaceChildren(el('p', { class: 'empty' }, total ? 'No key matches the filter' : 'No keys yet. Set one under Actions.'));
      return;
    }
    tree.replaceChildren(...renderFolder(root, ''));
  }

  function countLeafs(folder) {
    let n = folder.leafs.length;
    for (const sub of folder.folders.values()) n += countLeafs(sub);
    return n;
  }

  function renderFolder(folder, path) {
    const out = [];
    for (const [name, sub] of [...folder.folders.entries()].sort((a, b) => a[0].localeCompare(b[0]))) {
      const subPath = path + name + '/';
      const details = el('details', { open: !dash.closed.has(subPath), dataset: { path: subPath } },
        el('summary', {}, el('span', { class: 'folder-name' }, name + '/'), el('span', { class: 'count' }, countLeafs(sub))),
        el('div', {}, ...renderFolder(sub, subPath)));
      details.addEventListener('toggle', () => {
        if (details.open) dash.closed.delete(subPath);
        else dash.closed.add(subPath);
      });
      out.push(details);
    }
    for (const key of folder.leafs) {
      const leaf = el('div', { class: 'leaf', dataset: { key } },
        el('span', { class: 'key', title: `${key} (click to edit)`, onclick: () => prepareSet(key) }, key.split('/').pop()),
        el('span', { class: 'value' }),
        el('span', { class: 'origin' }));
      fillLeaf(leaf, key);
      dash.leafs.set(key, leaf);
      out.push(leaf);
    }
    return out;
  }

  /** Shows an entry's value in its leaf: a switch for booleans, colored JSON otherwise. */
  function fillLeaf(leaf, key) {
    const e = dash.entries.get(key);
    if (!e) return;
    leaf.dataset.value = compact(e.value);
    leaf.querySelector('.origin').textContent = nameOf(e.origin);
    leaf.querySelector('.origin').title = `version ${e.version}`;
    const cell = leaf.querySelector('.value');
    if (typeof e.value === 'boolean') {
      let input = cell.querySelector('input');
      if (!input) {
        input = el('input', { type: 'checkbox', role: 'switch', 'aria-label': `toggle ${key}` });
        input.addEventListener('change', () => toggle(key, input));
        cell.replaceChildren(el('label', { class: 'switch' }, input, el('span', { class: 'track' })), el('span', { class: 'json' }));
      }
      input.checked = e.value;
      input.disabled = false;
      const text = cell.querySelector('.json');
      text.className = 'json ' + (e.value ? 'v-true' : 'v-false');
      text.textContent = e.value ? 'true' : 'false';
    } else {
      cell.replaceChildren(valueSpan(e.value));
    }
  }

  function valueSpan(value) {
    const kind = value === null ? 'null' : typeof value;
    const cls = { number: 'v-number', string: 'v-string', null: 'v-null', boolean: value ? 'v-true' : 'v-false' }[kind] || '';
    const text = compact(value);
    return el('span', { class: 'json ' + cls, title: text.length > 60 ? JSON.stringify(value, null, 2) : null }, text);
  }

  function flash(node) {
    node.classList.remove('flash');
    void node.offsetWidth; // restarts the animation
    node.classList.add('flash');
  }

  async function toggle(key, input) {
    const e = dash.entries.get(key);
    const next = !(e && e.value === true);
    input.disabled = true;
    try {
      await api('PUT', '/v1/kv/' + keyPath(key), next);
    } catch (err) {
      log('error', 'error', `cannot set ${key}: ${err.message}`);
      input.checked = !next;
    } finally {
      input.disabled = false;
    }
  }

  // ---- actions ----

  function selectTab(name) {
    for (const tab of document.querySelectorAll('.tabs [role=tab]')) {
      tab.setAttribute('aria-selected', String(tab.dataset.tab === name));
    }
    for (const panel of document.querySelectorAll('.panel')) panel.hidden = panel.dataset.panel !== name;
  }

  function prepareSet(key) {
    selectTab('set');
    const form = $('#set-form');
    form.key.value = key;
    const e = dash.entries.get(key);
    form.value.value = e ? JSON.stringify(e.value) : '';
    form.value.focus();
  }

  function prepareCall(service) {
    selectTab('call');
    $('#call-form').service.value = service;
    $('#call-form').body.focus();
  }

  function showResult(text, isError) {
    const out = $('#action-result');
    out.hidden = false;
    out.classList.toggle('error', !!isError);
    out.textContent = text;
  }

  /** The JSON in a text box; empty means null. */
  function parseJson(text, what) {
    if (!text.trim()) return null;
    try {
      return JSON.parse(text);
    } catch (_) {
      throw new Error(`${what} is not JSON (write strings in double quotes)`);
    }
  }

  async function submit(event, action) {
    event.preventDefault();
    const button = event.target.querySelector('button[type=submit]');
    if (button) button.disabled = true;
    try {
      showResult(await action(), false);
    } catch (e) {
      showResult(e.message, true);
    } finally {
      if (button) button.disabled = false;
    }
  }

  function wireActions() {
    for (const tab of document.querySelectorAll('.tabs [role=tab]')) {
      tab.addEventListener('click', () => selectTab(tab.dataset.tab));
    }
    $('#set-form').addEventListener('submit', (event) => submit(event, async () => {
      const form = event.target;
      const key = form.key.value.trim();
      const value = parseJson(form.value.value, 'the value');
      const written = await api('PUT', '/v1/kv/' + keyPath(key), value);
      return `${key} = ${compact(value)}\nversion ${written.version}, applied by ${nameOf(written.origin)}`;
    }));
    $('#delete-key').addEventListener('click', async () => {
      const key = $('#set-form').key.value.trim();
      if (!key) return showResult('Name the key to delete', true);
      try {
        await api('DELETE', '/v1/kv/' + keyPath(key));
        showResult(`${key} deleted`, false);
      } catch (e) {
        showResult(e.message, true);
      }
    });
    $('#send-form').addEventListener('submit', (event) => submit(event, async () => {
      const form = event.target;
      const body = parseJson(form.body.value, 'the body');
      const to = form.to.value;
      await api('POST', '/v1/messages', { to, body, reliable: form.reliable.checked });
      const target = ['broadcast', 'leader', 'all'].includes(to) ? to : nameOf(to);
      log('message', 'sent', [`to ${target}: `, body === null ? 'null' : compact(body)], form.reliable.checked ? 'reliable, acknowledged' : '');
      return `sent to ${target}${form.reliable.checked ? ', acknowledged' : ''}`;
    }));
    $('#call-form').addEventListener('submit', (event) => submit(event, async () => {
      const form = event.target;
      const service = form.service.value.trim();
      const body = parseJson(form.body.value, 'the body');
      const reply = await api('POST', `/v1/services/${encodeURIComponent(service)}/call`, { body, policy: form.policy.value });
      const shown = reply.replies
        ? reply.replies.map((r) => `${nameOf(r.from)}: ${r.error ? 'error: ' + r.error : compact(r.body)}`).join('\n')
        : `${nameOf(reply.from)} answered:\n${JSON.stringify(reply.body, null, 2)}`;
      log('call', 'call', [`${service} `, body === null ? 'null' : compact(body)], reply.replies ? `${reply.replies.length} replies` : `answered by ${nameOf(reply.from)}`);
      return shown;
    }));
  }

  // ---- log ----

  const keySpan = (key) => el('strong', {}, key);
  const body = (value) => el('span', { class: 'body' }, compact(value));

  function log(tagClass, tag, text, detail, data = {}) {
    const item = el('li', { class: 'fresh', dataset: { type: tagClass, ...data } },
      el('time', {}, clock()),
      el('span', { class: 'tag ' + tagClass }, tag),
      el('span', { class: 'text' }, text, detail ? el('span', { class: 'muted' }, ' · ' + detail) : null));
    if (dash.paused) {
      dash.held.push(item);
      if (dash.held.length > LOG_LIMIT) dash.held.shift();
      $('#log-pause').textContent = `Resume (${dash.held.length})`;
      return;
    }
    const list = $('#log');
    list.prepend(item);
    while (list.children.length > LOG_LIMIT) list.lastElementChild.remove();
  }

  function wireLog() {
    $('#log-pause').addEventListener('click', (event) => {
      dash.paused = !dash.paused;
      event.target.setAttribute('aria-pressed', String(dash.paused));
      if (!dash.paused) {
        const list = $('#log');
        for (const item of dash.held) list.prepend(item);
        dash.held = [];
        while (list.children.length > LOG_LIMIT) list.lastElementChild.remove();
        event.target.textContent = 'Pause';
      } else {
        event.target.textContent = 'Resume';
      }
    });
    $('#log-clear').addEventListener('click', () => {
      $('#log').replaceChildren();
      dash.held = [];
    });
  }

  // ---- theme ----

  function wireTheme() {
    const root = document.documentElement;
    const saved = localStorage.getItem('consort-theme');
    if (saved) root.dataset.theme = saved;
    $('#theme').addEventListener('click', () => {
      const order = ['auto', 'light', 'dark'];
      const now = root.dataset.theme || 'auto';
      const next = order[(order.indexOf(now) + 1) % order.length];
      if (next === 'auto') {
        delete root.dataset.theme;
        localStorage.removeItem('consort-theme');
      } else {
        root.dataset.theme = next;
        localStorage.setItem('consort-theme', next);
      }
      $('#theme').title = `Theme: ${next}`;
    });
  }

  // ---- start ----

  function start() {
    initToken();
    wireTheme();
    wireActions();
    wireLog();
    $('#filter').addEventListener('input', renderTree);
    $('#token-form').addEventListener('submit', () => {
      dash.token = $('#token-form').token.value.trim();
      sessionStorage.setItem(tokenSlot(), dash.token);
      if (dash.ws) dash.ws.close();
      else connect();
    });
    setInterval(refresh, REFRESH_MS);
    connect();
  }

  start();
})();
