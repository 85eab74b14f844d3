// claude-relay console. Plain JavaScript, no framework, no build step.
//
// Start from GET /api/state, then follow GET /api/feed (server-sent events) and apply each
// event. Everything sessions say about themselves (names, cwd, host, client) and every body is
// attacker-controlled: it only ever reaches the page through textContent / createTextNode,
// never innerHTML, and the CSP forbids inline script anyway.
//
// One panel per concern. A panel is {render(state)}; the list `panels` below is what gets
// redrawn. A new concern adds its section to console.html, its panel object here, and its
// event kinds to `handlers` (as the approvals inbox does).
'use strict';

const MAX_MESSAGES = 500;
// Board order: what needs someone first, then what is moving, then what is done.
const TASK_STATES = ['input-required', 'working', 'submitted', 'completed', 'failed', 'rejected', 'canceled'];
const OPEN_STATES = new Set(['submitted', 'working', 'input-required']);
const MAX_FINISHED_TASKS = 50;
// Approvals kept on the page (as /api/approvals returns them): every pending one it lists,
// and this many decided ones.
const MAX_DECIDED_APPROVALS = 50;

const state = {
  hub: null,
  sessions: new Map(),   // id -> session
  messages: new Map(),   // seq -> message
  tasks: new Map(),      // id -> task (the board)
  approvals: new Map(),  // id -> approval (the inbox)
  csrf: null,
  unreadable: null,      // why the store could not be read, if it could not
  filter: null,          // session id the flow is filtered to
  live: 'connecting',
  fresh: new Set(),      // seqs to flash once
  freshTasks: new Set(), // task ids to flash once
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
    $('foot').textContent = (state.unreadable ? 'the store could not be read: ' + state.unreadable + ' · ' : '') +
      'epoch ' + hub.epoch + ' · ' + (hub.tls ? 'wss' : 'ws') +
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

// One row per task: id, state, from → holder (the addressee in parentheses while nobody holds
// it), age since its last move, title. Open tasks first, by state, newest first.
const tasksPanel = {
  render() {
    const box = $('tasks');
    const order = (t) => TASK_STATES.indexOf(t.state);
    const tasks = [...state.tasks.values()].sort((a, b) => (order(a) - order(b)) || (b.updated - a.updated));
    const open = tasks.filter((t) => OPEN_STATES.has(t.state)).length;
    $('tasks-count').textContent = tasks.length ? open + ' open · ' + (tasks.length - open) + ' finished' : '';
    if (tasks.length === 0) {
      box.replaceChildren(el('div', { class: 'empty', data: { empty: 'tasks' } }, 'No tasks yet.'));
      return;
    }
    const rows = tasks.map((t) => el('div', {
      class: 'task' + (state.freshTasks.has(t.id) ? ' new' : ''),
      data: { task: t.id, state: t.state },
      role: 'row',
    },
      el('span', { class: 'id mono', role: 'cell' }, t.id),
      el('span', { class: 'state', role: 'cell', data: { state: t.state } }, t.state),
      el('span', { class: 'route mono', role: 'cell' },
        el('span', { class: 'from' }, t.from),
        el('span', { class: 'arrow' }, '→'),
        t.holder ? el('span', { class: 'holder' }, t.holder)
          : el('span', { class: 'holder unheld', title: 'offered, not claimed' }, '(' + t.to + ')')),
      el('span', { class: 'age', role: 'cell', title: new Date(t.updated).toISOString() }, ago(t.updated)),
      el('span', { class: 'title', role: 'cell', title: t.title }, t.title)));
    state.freshTasks.clear();
    box.replaceChildren(...rows);
  },
};

// Keeps the board to the open tasks and the most recent finished ones (as /api/state does).
function putTask(t) {
  state.tasks.set(t.id, t);
  const finished = [...state.tasks.values()].filter((x) => !OPEN_STATES.has(x.state))
    .sort((a, b) => b.updated - a.updated);
  for (const old of finished.slice(MAX_FINISHED_TASKS)) state.tasks.delete(old.id);
}

// The approval inbox: pending prompts (oldest first) with Allow / Deny, then the latest
// verdicts (newest first) with who answered. Only a human answers: these buttons are the
// console's way, a CSRF-protected POST with the viewer's login.
//
// Rows are redrawn on every event, so a row can move up under the pointer just before a
// click (the one above it was answered elsewhere) and the click would land on another
// prompt. So when a redraw moves a row that was on screen, Allow / Deny clicks are ignored
// for SETTLE_MS (the panel says so; click again).
const SETTLE_MS = 700;
const approvalsPanel = {
  order: [],      // ids in the order last drawn
  movedAt: -Infinity,
  render() {
    const box = $('approvals');
    const all = [...state.approvals.values()];
    const pending = all.filter((a) => a.state === 'pending').sort((a, b) => a.created - b.created);
    const decided = all.filter((a) => a.state !== 'pending').sort((a, b) => (b.decided || 0) - (a.decided || 0));
    const order = [...pending, ...decided].map((a) => a.id);
    const before = this.order;
    if (order.some((id, i) => { const j = before.indexOf(id); return j !== -1 && j !== i; })) {
      this.movedAt = performance.now();
    }
    this.order = order;
    $('approvals-count').textContent = pending.length ? pending.length + ' waiting for you' : 'nothing waiting';
    if (all.length === 0) {
      box.replaceChildren(el('div', { class: 'empty', data: { empty: 'approvals' } }, 'No permission prompts.'));
      return;
    }
    const row = (a) => el('div', { class: 'approval', data: { approval: a.id, state: a.state }, role: 'row' },
      el('span', { class: 'id mono', role: 'cell' }, a.id),
      el('span', { class: 'state', role: 'cell', data: { state: a.state } }, a.state),
      el('span', { class: 'who mono', role: 'cell', title: (a.host || '') + ' ' + (a.cwd || '') }, a.session),
      el('span', { class: 'summary', role: 'cell', title: a.summary }, el('b', null, a.tool), ' ', a.summary),
      a.state === 'pending'
        ? el('span', { class: 'actions', role: 'cell' },
          el('button', { class: 'allow', onclick: () => settledAnswer(a.id, 'allow') }, 'Allow'),
          el('button', { class: 'deny ghost', onclick: () => settledAnswer(a.id, 'deny') }, 'Deny'),
          cutNote(a))
        : el('span', { class: 'verdict', role: 'cell' }, (a.by ? 'by ' + a.by : '') + (a.message ? ' · ' + a.message : '')),
      el('pre', { class: 'preview mono' }, place(a) + a.preview));
    box.replaceChildren(...pending.map(row), ...decided.map(row));
  },
};

// Next to Allow: the preview is not the whole input, so whoever approves knows they have
// not seen all of it (docs/SECURITY.md, "Approvals").
function cutNote(a) {
  if (!a.truncated) return null;
  const shown = [...a.preview].length;
  const text = a.inputChars != null
    ? 'input cut: ' + shown + ' of ' + a.inputChars + ' characters'
    : 'input cut: ' + shown + ' characters, cut by the agent\'s client';
  return el('span', { class: 'cut', data: { cut: a.id } }, text);
}

// "host:cwd" on its own line before the preview, when the filer said where it runs.
function place(a) {
  const where = (a.host ? a.host + ':' : '') + (a.cwd || '');
  return where ? where + '\n' : '';
}

function putApproval(a) {
  state.approvals.set(a.id, a);
  const decided = [...state.approvals.values()].filter((x) => x.state !== 'pending')
    .sort((x, y) => (y.decided || 0) - (x.decided || 0));
  for (const old of decided.slice(MAX_DECIDED_APPROVALS)) state.approvals.delete(old.id);
}

// A click within SETTLE_MS of rows moving is ignored (see approvalsPanel).
function settledAnswer(id, behavior) {
  if (performance.now() - approvalsPanel.movedAt < SETTLE_MS) {
    $('approvals').dataset.ignored = id;
    $('approvals-count').textContent = 'the list just moved — click again';
    return;
  }
  delete $('approvals').dataset.ignored;
  answer(id, behavior);
}

async function answer(id, behavior) {
  try {
    const r = await fetch('/api/approvals/' + encodeURIComponent(id), {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-Relay-CSRF': state.csrf || '' },
      body: JSON.stringify({ behavior }),
    });
    const body = await r.json().catch(() => null);
    if (body && body.approval) putApproval(body.approval);
  } catch (_) { /* the feed brings the state */ }
  schedule();
}

async function loadApprovals() {
  try {
    const r = await fetch('/api/approvals', { credentials: 'same-origin' });
    if (!r.ok) return;
    const s = await r.json();
    state.approvals = new Map();
    for (const a of s.approvals) putApproval(a);
    schedule();
  } catch (_) { /* retried with the next state load */ }
}

const panels = [healthPanel, approvalsPanel, sessionsPanel, flowPanel, tasksPanel];

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
    state.unreadable = s.unreadable || null;
    state.tasks = new Map((s.tasks || []).map((t) => [t.id, t]));
    state.sessions = new Map(s.sessions.map((x) => [x.id, x]));
    state.messages = new Map(s.messages.map((x) => [x.seq, x]));
    loadApprovals();
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
  task(ev) {
    putTask({ id: ev.id, state: ev.state, from: ev.from, to: ev.to, holder: ev.holder || null, title: ev.title, created: ev.created, updated: ev.ts });
    state.freshTasks.add(ev.id);
  },
  approval(ev) { putApproval(ev); },
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
