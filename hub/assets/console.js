// claude-relay console. Plain JavaScript, no framework, no build step.
//
// Start from GET /api/state, then follow GET /api/feed (server-sent events) and apply each
// event. Everything sessions say about themselves (names, cwd, host, client) and every body is
// attacker-controlled: it only ever reaches the page through textContent / createTextNode,
// never innerHTML, and the CSP forbids inline script anyway.
//
// One panel per concern. A panel is {render(state)}; the list `panels` below is what gets
// redrawn. A new concern (the approvals inbox, say) adds its section to console.html, its
// panel object here, and its event kinds to `handlers`.
'use strict';

const MAX_MESSAGES = 500;
const TASK_STATES = ['submitted', 'working', 'input-required', 'completed', 'failed', 'rejected', 'canceled'];

const state = {
  hub: null,
  sessions: new Map(),   // id -> session
  messages: new Map(),   // seq -> message
  tasks: null,           // null until the hub keeps tasks
  csrf: null,
  filter: null,          // session id the flow is filtered to
  live: 'connecting',
  fresh: new Set(),      // seqs to flash once
};

// ---- DOM helpers: text only ----

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'data') for (const [dk, dv] of Object.entries(v)) node.dataset[dk] = String(dv);
      else if (k === 'title') node.title = String(v);
      else if (k === 'onclick') node.addEventListener('click', v);
      else node.setAttribute(k, String(v));
    }
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const $ = (id) => document.getElementById(id);

// ---- formatting ----

function ago(ms) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 10) return 'just now';
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' d ago';
}

function clock(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
}

function size(n) {
  if (n < 1024) return n + ' B';
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
  return (n / 1048576).toFixed(1) + ' MiB';
}

function duration(s) {
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min';
  if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
  return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
}

// Which agent a session serves, from what its bridge reported on register.
function clientName(s) {
  const name = (s.client && s.client.name) || '';
  const n = name.toLowerCase();
  if (n.includes('claude')) return 'Claude Code';
  if (n.includes('codex')) return 'Codex';
  if (n.includes('gemini')) return 'Gemini CLI';
  if (n.includes('cursor')) return 'Cursor';
  if (name) return name;
  if (s.claudeCode) return 'Claude Code';
  if (s.source === 'mcp-bridge') return 'MCP client';
  return 'WebSocket client';
}

// ---- panels ----

const healthPanel = {
  render() {
    const hub = state.hub;
    if (!hub) return;
    const box = $('health');
    box.dataset.store = hub.store;
    const store = hub.store === 'ok' ? 'healthy' : 'store ' + hub.store;
    $('health-text').textContent = store + ' · v' + hub.version + ' · up ' + duration(hub.uptimeS);
    const live = $('live');
    live.dataset.live = state.live;
    live.textContent = state.live === 'live' ? ' live' : state.live;
    $('logout').hidden = hub.viewer !== 'login';
    const sessions = [...state.sessions.values()];
    $('stat-online').textContent = sessions.filter((s) => s.online).length;
    $('stat-sessions').textContent = sessions.length;
    $('stat-unread').textContent = sessions.reduce((n, s) => n + (s.unread || 0), 0);
    $('stat-messages').textContent = state.messages.size;
    $('foot').textContent = 'epoch ' + hub.epoch + ' · ' + (hub.tls ? 'wss' : 'ws') +
      ' · ' + (hub.auth ? 'token required' : 'loopback only (no token)') + ' · viewing by ' + hub.viewer;
  },
};

const sessionsPanel = {
  render() {
    const list = [...state.sessions.values()].sort((a, b) =>
      (b.online - a.online) || ((b.lastSeen || 0) - (a.lastSeen || 0)) || a.id.localeCompare(b.id));
    const rows = list.map((s) => {
      const selected = state.filter === s.id;
      const unread = s.unread == null ? '–' : s.unread;
      return el('article', {
        class: 'session' + (selected ? ' selected' : ''),
        data: { session: s.id, presence: s.online ? 'online' : 'offline' },
        onclick: () => { state.filter = selected ? null : s.id; schedule(); },
      },
        el('div', { class: 'name' }, s.id),
        el('span', { class: 'unread', data: { unread }, title: unread + ' unread' }, unread),
        el('div', { class: 'line2' },
          el('span', { class: 'presence' }, el('span', { class: 'dot' }),
            s.online ? 'online' : 'offline · ' + ago(s.lastSeen)),
          el('span', { class: 'chip client', title: s.client && s.client.version ? 'version ' + s.client.version : null }, clientName(s)),
          s.host ? el('span', { class: 'host', title: 'machine' }, s.host) : null,
          s.pid ? el('span', { class: 'pid mono' }, 'pid ' + s.pid) : null),
        s.cwd ? el('div', { class: 'cwd', title: s.cwd }, s.cwd) : null);
    });
    $('sessions').replaceChildren(...(rows.length ? rows : [el('div', { class: 'empty' }, 'No session has registered yet.')]));
  },
};

const flowPanel = {
  render() {
    const filter = state.filter;
    const chip = $('flow-filter');
    chip.hidden = !filter;
    chip.textContent = filter ? filter + ' ✕' : '';
    const msgs = [...state.messages.values()]
      .filter((m) => !filter || m.from === filter || m.to === filter || (m.to === 'all' && m.from !== filter))
      .sort((a, b) => b.seq - a.seq);
    const rows = msgs.map((m) => el('li', {
      class: 'msg' + (state.fresh.has(m.seq) ? ' new' : ''),
      data: { seq: m.seq, from: m.from, to: m.to, state: m.state },
      onclick: () => openBody(m),
      title: 'message ' + m.seq,
    },
      el('span', { class: 'time', title: new Date(m.ts).toISOString() }, clock(m.ts)),
      el('span', { class: 'route' },
        el('span', { class: 'from' }, m.from),
        el('span', { class: 'arrow' }, '→'),
        el('span', { class: 'to' }, m.to === 'all' ? 'everyone' : m.to)),
      el('span', { class: 'size' }, size(m.bytes)),
      el('span', { class: 'state', data: { state: m.state } }, stateLabel(m))));
    state.fresh.clear();
    $('flow').replaceChildren(...(rows.length ? rows : [el('li', { class: 'empty' }, filter ? 'No messages to or from ' + filter + '.' : 'No messages yet.')]));
  },
};

function stateLabel(m) {
  if (m.to === 'all' && m.readBy) return 'read by ' + m.readBy;
  return m.state;
}

const tasksPanel = {
  render() {
    const box = $('tasks');
    if (!state.tasks || state.tasks.length === 0) {
      box.replaceChildren(el('div', { class: 'empty', data: { empty: 'tasks' } }, 'No tasks yet.'));
      return;
    }
    box.replaceChildren(...TASK_STATES.map((st) => el('div', { class: 'column', data: { state: st } },
      el('h3', null, st),
      ...state.tasks.filter((t) => t.state === st).map((t) => el('div', { class: 'task', data: { task: t.id } },
        el('div', { class: 'mono' }, t.title || t.id),
        el('div', { class: 'muted small' }, (t.from || '?') + ' → ' + (t.to || '?')))))));
  },
};

const panels = [healthPanel, sessionsPanel, flowPanel, tasksPanel];

let pending = false;
function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    for (const p of panels) p.render();
    document.body.dataset.ready = 'true';
  });
}

// ---- message bodies, on demand ----

async function openBody(m) {
  const dialog = $('body');
  $('body-title').textContent = m.from + ' → ' + (m.to === 'all' ? 'everyone' : m.to);
  $('body-meta').textContent = new Date(m.ts).toLocaleString() + ' · ' + size(m.bytes) + ' · ' + stateLabel(m);
  $('body-text').textContent = 'loading…';
  if (!dialog.open) dialog.showModal();
  try {
    const r = await fetch('/api/message?seq=' + encodeURIComponent(m.seq), { credentials: 'same-origin' });
    if (!r.ok) throw new Error(await r.text());
    const body = await r.json();
    $('body-text').textContent = body.content;
  } catch (e) {
    $('body-text').textContent = 'Could not load the body: ' + e.message;
  }
}

// ---- state and events ----

function addMessage(m) {
  state.messages.set(m.seq, m);
  if (state.messages.size > MAX_MESSAGES) {
    const oldest = Math.min(...state.messages.keys());
    state.messages.delete(oldest);
  }
}

async function loadState() {
  try {
    const r = await fetch('/api/state', { credentials: 'same-origin' });
    if (r.status === 401) { location.reload(); return; }
    if (!r.ok) throw new Error('HTTP ' + r.status);
    const s = await r.json();
    state.hub = s.hub;
    state.csrf = s.csrf;
    state.tasks = s.tasks;
    state.sessions = new Map(s.sessions.map((x) => [x.id, x]));
    state.messages = new Map(s.messages.map((x) => [x.seq, x]));
    schedule();
  } catch (e) {
    state.live = 'reconnecting';
    schedule();
  }
}

let refetch = null;
function refetchSoon() {
  clearTimeout(refetch);
  refetch = setTimeout(loadState, 300);
}

const handlers = {
  hello() { state.live = 'live'; loadState(); },
  session(ev) {
    const s = state.sessions.get(ev.id);
    if (!s) { refetchSoon(); return; }
    s.online = ev.online;
    s.lastSeen = ev.ts;
    // A session that comes back may come back from another machine or directory.
    if (ev.online) refetchSoon();
  },
  message(ev) {
    const m = { seq: ev.seq, from: ev.from, to: ev.to, ts: ev.ts, bytes: ev.bytes, state: ev.state, readBy: ev.to === 'all' ? 0 : null };
    if (state.messages.has(m.seq)) return;
    addMessage(m);
    state.fresh.add(m.seq);
    const sender = state.sessions.get(ev.from);
    if (sender) sender.lastSeen = ev.ts;
    if (ev.to === 'all') {
      for (const s of state.sessions.values()) if (s.id !== ev.from && s.unread != null) s.unread += 1;
    } else {
      const to = state.sessions.get(ev.to);
      if (to && to.unread != null) to.unread += 1;
    }
  },
  delivered(ev) {
    for (const seq of ev.seqs) {
      const m = state.messages.get(seq);
      if (m && m.state === 'stored') m.state = 'delivered';
    }
  },
  read(ev) {
    const s = state.sessions.get(ev.by);
    if (s) s.unread = ev.unread;
    for (const seq of ev.seqs) {
      const m = state.messages.get(seq);
      if (!m) continue;
      if (m.to === 'all') m.readBy = (m.readBy || 0) + 1;
      m.state = 'read';
    }
  },
  lagged() { refetchSoon(); },
};

function connect() {
  const es = new EventSource('/api/feed');
  for (const [kind, handle] of Object.entries(handlers)) {
    es.addEventListener(kind, (e) => {
      let data = {};
      try { data = JSON.parse(e.data); } catch (_) { return; }
      handle(data);
      schedule();
    });
  }
  es.onerror = () => {
    state.live = 'reconnecting';
    schedule();
    // EventSource retries by itself; a 401 (logged out, hub restarted) needs the login page.
    if (es.readyState === EventSource.CLOSED) setTimeout(() => location.reload(), 3000);
  };
}

$('logout').addEventListener('click', async () => {
  await fetch('/logout', { method: 'POST', credentials: 'same-origin', headers: { 'X-Relay-CSRF': state.csrf || '' } });
  location.reload();
});
$('flow-filter').addEventListener('click', () => { state.filter = null; schedule(); });

// Relative times age; the uptime moves.
setInterval(() => { if (state.hub) { state.hub.uptimeS += 10; schedule(); } }, 10000);

connect();
