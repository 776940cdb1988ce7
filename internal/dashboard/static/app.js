// nvent dashboard: flow runs and their events, live over /v1/ws.
// Plain JS, no dependencies. The runs list comes from GET /v1/runs and is
// kept current by the client:ui:runs topic; the selected run's timeline
// comes from a run subscription (history, then live events) and resumes
// after a reconnect from the last seq shown.
(() => {
  'use strict';

  const token = new URLSearchParams(location.search).get('access_token') || '';
  const MAX_RUNS = 200;      // runs kept in the list (the oldest go first)
  const MAX_PAGES = 5;       // pages of 1,000 runs read when the list loads
  const PING_EVERY = 20000;  // ms between pings
  const STALE_AFTER = 45000; // ms without any message before the socket is dropped
  const $ = (id) => document.getElementById(id);

  // ---- state ----
  const runs = new Map();    // runId -> {run, seen, row}
  let placing = false;       // the rows' order is to be redone
  let selected = '';         // runId shown in the timeline
  let events = new Map();    // seq -> event of the selected run
  let contiguous = 0;        // every seq in 1..contiguous is shown
  let generation = 0;        // grows with each selection: stale reads are dropped
  let filling = -1;          // the generation whose gap fill is under way
  let ws = null;             // the open (or opening) socket
  let attempt = 0;           // reconnect attempts since the last good connection
  let retryTimer = 0, pingTimer = 0, lastMessageAt = 0;

  // ---- HTTP ----
  function withToken(path) {
    if (!token) return path;
    return path + (path.includes('?') ? '&' : '?') + 'access_token=' + encodeURIComponent(token);
  }

  async function api(method, path, body) {
    const init = { method, cache: 'no-store', headers: {} };
    if (body !== undefined) {
      init.body = body;
      init.headers['Content-Type'] = 'application/json';
    }
    const res = await fetch(withToken(path), init);
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
    if (!res.ok) {
      const e = (data && data.error) || {};
      const err = new Error(e.message || `${res.status} ${res.statusText}`);
      err.status = res.status;
      err.code = e.code;
      throw err;
    }
    return data;
  }

  function log(msg, isError) {
    const el = $('log');
    el.textContent = `${new Date().toLocaleTimeString()} ${msg}`;
    el.classList.toggle('error', !!isError);
    if (isError) console.warn('nvent:', msg);
  }

  // ---- formatting ----
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  function fmtTime(iso, withMs) {
    if (!iso) return '';
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    let s = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    if (withMs) s += '.' + pad(d.getMilliseconds(), 3);
    if (d.toDateString() !== new Date().toDateString()) {
      s = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${s}`;
    }
    return s;
  }
  function fmtData(data) {
    if (data === null || data === undefined) return '';
    const s = JSON.stringify(data);
    return s.length > 600 ? s.slice(0, 600) + '…' : s;
  }
  // shortID shows the end of a long id: run ids are UUIDv7, whose first
  // characters are a timestamp that runs started together share.
  const shortID = (id) => (id.length > 16 ? '…' + id.slice(-12) : id);
  function cell(tr, text, cls, title) {
    const td = tr.insertCell();
    td.textContent = text;
    if (cls) td.className = cls;
    if (title) td.title = title;
    return td;
  }

  // ---- runs ----
  // upsertRun keeps the newest state of a run: an update with a lower
  // lastSeq than the one shown is stale (it raced a newer one) and ignored.
  function upsertRun(run) {
    if (!run || !run.runId) return;
    const old = runs.get(run.runId);
    if (old && (old.run.lastSeq || 0) > (run.lastSeq || 0)) return;
    const entry = old || { seen: new Date().toISOString(), row: null };
    entry.run = run;
    runs.set(run.runId, entry);
    renderRun(entry);
    if (run.runId === selected) renderDetailMeta();
  }

  const sortKey = (e) => e.run.startedAt || e.seen;
  function byNewest(a, b) {
    const ka = sortKey(a), kb = sortKey(b);
    if (ka !== kb) return ka < kb ? 1 : -1;
    return a.run.runId < b.run.runId ? 1 : a.run.runId > b.run.runId ? -1 : 0;
  }

  function renderRun(entry) {
    const run = entry.run;
    const steps = run.steps || {};
    const tr = document.createElement('tr');
    tr.dataset.runId = run.runId;
    tr.dataset.status = run.status || '';
    tr.setAttribute('aria-selected', String(run.runId === selected));
    tr.tabIndex = 0;
    cell(tr, shortID(run.runId), 'id', run.runId);
    cell(tr, run.flowName || '');
    const st = tr.insertCell().appendChild(document.createElement('span'));
    st.className = `status status-${run.status || 'unknown'}`;
    st.textContent = run.status || '?';
    cell(tr, fmtTime(run.startedAt), '', run.startedAt || '');
    cell(tr, `${steps.completed || 0}/${steps.started || 0}`, 'steps-done');
    cell(tr, String(steps.failed || 0), steps.failed ? 'steps-failed failed-count' : 'steps-failed');
    if (entry.row) entry.row.replaceWith(tr);
    entry.row = tr;
    if (!placing) {
      placing = true;
      queueMicrotask(placeRuns); // once per batch of updates
    }
  }

  // placeRuns orders the rows newest first and keeps at most MAX_RUNS
  // (never dropping the selected one).
  function placeRuns() {
    placing = false;
    const all = [...runs.values()].sort(byNewest);
    let kept = 0;
    const body = $('runs-body');
    for (const e of all) {
      if (kept >= MAX_RUNS && e.run.runId !== selected) {
        e.row.remove();
        runs.delete(e.run.runId);
        continue;
      }
      kept++;
      if (body.children[kept - 1] !== e.row) body.insertBefore(e.row, body.children[kept - 1] || null);
    }
    $('runs-empty').hidden = runs.size > 0;
    $('runs-count').textContent = runs.size ? `(${runs.size})` : '';
  }

  // loadRuns reads the runs from the store. GET /v1/runs pages in run id
  // order (oldest first), so the newest are on the last pages: it follows
  // `next` for up to MAX_PAGES pages.
  async function loadRuns() {
    let base = '/v1/runs?limit=1000';
    let page;
    try {
      page = await api('GET', base);
    } catch (err) {
      if (err.status !== 404 && err.status !== 405) throw err;
      base = '/v1/docs/runs?limit=1000'; // a server without the runs API: the run documents
      page = await api('GET', base);
    }
    for (let n = 1; ; n++) {
      for (const item of (page && page.items) || []) {
        // Items are runs, or documents holding a run in data.
        upsertRun(item && item.data && typeof item.data === 'object' && item.data.runId ? item.data : item);
      }
      if (!page || !page.next || n >= MAX_PAGES) break;
      page = await api('GET', `${base}&after=${encodeURIComponent(page.next)}`);
    }
  }

  function refreshRuns() {
    loadRuns().catch((err) => log(`loading runs: ${err.message}`, true));
  }

  // ---- the selected run ----
  function select(runId) {
    if (!runId || runId === selected) return;
    if (selected) send({ type: 'unsubscribe', runId: selected });
    selected = runId;
    generation++;
    events = new Map();
    contiguous = 0;
    $('events-body').replaceChildren();
    $('events').hidden = false;
    $('detail-title').textContent = `Run ${runId}`;
    for (const e of runs.values()) e.row.setAttribute('aria-selected', String(e.run.runId === runId));
    history.replaceState(null, '', `${location.pathname}${location.search}#run=${encodeURIComponent(runId)}`);
    renderDetailMeta();
    if (!subscribeRun()) fillGap(); // offline: show what the store has
  }

  function renderDetailMeta() {
    const e = runs.get(selected);
    const el = $('detail-meta');
    if (!e) { el.textContent = ''; return; }
    const r = e.run, s = r.steps || {};
    el.textContent = [
      r.flowName && `flow ${r.flowName}`,
      r.status,
      r.startedAt && `started ${fmtTime(r.startedAt, true)}`,
      r.finishedAt && `finished ${fmtTime(r.finishedAt, true)}`,
      `steps ${s.completed || 0}/${s.started || 0} done, ${s.failed || 0} failed`,
    ].filter(Boolean).join(' · ');
  }

  // addEvents shows the events of the selected run it has not shown yet,
  // in seq order, and reads any gap it notices from the store.
  function addEvents(list, live) {
    const body = $('events-body');
    for (const ev of list || []) {
      if (!ev || typeof ev.seq !== 'number' || events.has(ev.seq)) continue;
      events.set(ev.seq, ev);
      const tr = document.createElement('tr');
      tr.dataset.seq = String(ev.seq);
      tr.dataset.type = ev.type || '';
      if (/\.failed$/.test(ev.type || '')) tr.classList.add('type-failed');
      if (live) tr.classList.add('fresh');
      cell(tr, String(ev.seq));
      cell(tr, ev.type || '');
      cell(tr, (ev.stepName || '') + (ev.attempt > 1 ? ` (attempt ${ev.attempt})` : ''), '', ev.stepId || '');
      cell(tr, fmtTime(ev.ts, true), '', ev.ts || '');
      cell(tr, fmtData(ev.data), 'data');
      // Rows are nearly always appended; walk back from the end otherwise.
      let before = null;
      for (let r = body.lastElementChild; r && Number(r.dataset.seq) > ev.seq; r = r.previousElementSibling) before = r;
      body.insertBefore(tr, before);
    }
    while (events.has(contiguous + 1)) contiguous++;
    if (events.size > contiguous) fillGap();
    else foldSelected();
  }

  // foldSelected updates the selected run's row from its events, as the
  // server folds them (handlers.ApplyRunEvent): client:ui:runs reports
  // status changes only, and the timeline has every event, so step counts
  // stay live for the run on screen. A newer state from the server wins.
  function foldSelected() {
    if (!contiguous) return;
    const run = { runId: selected, status: 'running', lastSeq: contiguous, steps: { started: 0, completed: 0, failed: 0 } };
    for (let seq = 1; seq <= contiguous; seq++) {
      const e = events.get(seq), t = e.type || '';
      if (e.flowName && !run.flowName) run.flowName = e.flowName;
      if (t === 'flow.start' || t === 'flow.started') { run.status = 'running'; run.startedAt = run.startedAt || e.ts; }
      else if (t === 'flow.completed') { run.status = 'completed'; run.finishedAt = e.ts; }
      else if (t === 'flow.failed') { run.status = 'failed'; run.finishedAt = e.ts; }
      else if (t === 'flow.canceled' || t === 'flow.cancelled') { run.status = 'canceled'; run.finishedAt = e.ts; }
      else if (t === 'step.started' || t === 'step.start') run.steps.started++;
      else if (t === 'step.completed') run.steps.completed++;
      else if (t === 'step.failed') run.steps.failed++;
    }
    const old = runs.get(selected);
    if (old) {
      run.flowName = run.flowName || old.run.flowName;
      run.startedAt = run.startedAt || old.run.startedAt;
    }
    if (old || run.startedAt) upsertRun(run);
  }

  // fillGap reads the selected run's events after the contiguous prefix
  // from the store until the gap is closed.
  async function fillGap() {
    const gen = generation, runId = selected;
    if (filling === gen || !runId) return;
    filling = gen;
    try {
      for (;;) {
        const from = contiguous;
        const page = await api('GET', `/v1/streams/nq:flow:${encodeURIComponent(runId)}/events?after=${from}&limit=1000`);
        if (gen !== generation) return;
        addEvents(page && page.events, false);
        if (contiguous === from || events.size === contiguous) break;
      }
    } catch (err) {
      if (gen === generation) log(`reading events of ${runId}: ${err.message}`, true);
    } finally {
      if (filling === gen) filling = -1;
    }
  }

  // ---- WebSocket ----
  function wsURL() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return withToken(`${proto}//${location.host}/v1/ws`);
  }

  function send(msg) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  function subscribeRun() {
    return !!selected && send({ type: 'subscribe', runId: selected, afterSeq: contiguous });
  }

  function setConn(state, text) {
    const el = $('conn');
    el.dataset.state = state;
    el.textContent = text || state;
  }

  function connect() {
    clearTimeout(retryTimer);
    setConn(attempt ? 'reconnecting' : 'connecting', attempt ? 'reconnecting…' : 'connecting…');
    let sock;
    try {
      sock = new WebSocket(wsURL());
    } catch (err) {
      log(`WebSocket: ${err.message}`, true);
      scheduleReconnect();
      return;
    }
    ws = sock;
    sock.onopen = () => {
      if (ws !== sock) return;
      setConn('open', 'live');
      if (attempt) log(selected ? `reconnected; resuming ${selected} after seq ${contiguous}` : 'reconnected');
      lastMessageAt = Date.now();
      send({ type: 'subscribe', topic: 'client:ui:runs' });
      subscribeRun();
      refreshRuns(); // what changed while we were away
      clearInterval(pingTimer);
      pingTimer = setInterval(() => {
        if (Date.now() - lastMessageAt > STALE_AFTER) drop(sock, 'no answer from the server');
        else send({ type: 'ping' });
      }, PING_EVERY);
    };
    sock.onmessage = (m) => {
      if (ws !== sock) return;
      lastMessageAt = Date.now();
      let msg;
      try { msg = JSON.parse(m.data); } catch (_) { log('undecodable message from the server', true); return; }
      handle(msg);
    };
    sock.onclose = (e) => {
      if (ws !== sock) return;
      drop(sock, e.reason || `closed (${e.code})`);
    };
  }

  // drop forgets sock and schedules the next connection.
  function drop(sock, why) {
    if (ws !== sock) return;
    ws = null;
    clearInterval(pingTimer);
    try { sock.close(); } catch (_) { /* already closing */ }
    log(`connection lost: ${why}`);
    scheduleReconnect();
  }

  function scheduleReconnect() {
    clearTimeout(retryTimer);
    const delay = Math.round(Math.min(30000, 500 * 2 ** Math.min(attempt, 10)) * (0.5 + Math.random() / 2));
    attempt++;
    setConn('reconnecting', `reconnecting in ${Math.max(1, Math.round(delay / 1000))}s`);
    retryTimer = setTimeout(connect, delay);
  }

  function handle(msg) {
    switch (msg.type) {
      case 'history':
        if (msg.runId === selected) addEvents(msg.events, false);
        break;
      case 'event':
        if (msg.topic === 'client:ui:runs') upsertRun(msg.data);
        else if (msg.runId && msg.runId === selected) addEvents([msg.event], true);
        break;
      case 'subscribed':
        attempt = 0; // the server works: the next drop starts the backoff over
        break;
      case 'error':
        log(`server: ${msg.message || msg.code || 'error'}`, true);
        break;
      default: // pong, and types this page does not know
    }
  }

  // ---- the start form ----
  $('start-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const out = $('start-result');
    const flow = $('flow-name').value.trim();
    const input = $('flow-input').value.trim() || 'null';
    out.className = '';
    try {
      JSON.parse(input);
    } catch (err) {
      out.className = 'error';
      out.textContent = `input is not JSON: ${err.message}`;
      return;
    }
    const button = $('start-button');
    button.disabled = true;
    try {
      const res = await api('POST', `/v1/flows/${encodeURIComponent(flow)}/runs`, input);
      out.textContent = `started ${res.runId}`;
      // Shown at once; the server's own state replaces it as it comes.
      upsertRun({ runId: res.runId, flowName: flow, status: 'running', startedAt: res.event && res.event.ts,
        lastSeq: -1, steps: { started: 0, completed: 0, failed: 0 } });
      select(res.runId);
    } catch (err) {
      out.className = 'error';
      out.textContent = `could not start ${flow}: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  });

  $('runs-body').addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-run-id]');
    if (tr) select(tr.dataset.runId);
  });
  $('runs-body').addEventListener('keydown', (e) => {
    const tr = e.target.closest('tr[data-run-id]');
    if (tr && (e.key === 'Enter' || e.key === ' ')) { e.preventDefault(); select(tr.dataset.runId); }
  });
  window.addEventListener('online', () => { if (!ws) { attempt = 0; connect(); } });

  // ---- start ----
  refreshRuns();
  const m = /^#run=(.+)$/.exec(location.hash);
  if (m) select(decodeURIComponent(m[1]));
  connect();
})();
