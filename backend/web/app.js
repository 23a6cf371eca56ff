// The page: sign-in, threads, the chat with live runs, the usage view.

import { ApiError, Session, loadConfig } from './api.js';
import { $, h, notify } from './dom.js';
import { RunView } from './runview.js';
import { LiveSocket } from './socket.js';
import { UsagePanel } from './usage.js';

const THREAD_KEY = 'agentchat.thread';
const DEFAULT_TITLE = 'New thread';

const app = {
  session: null,
  socket: null,
  usage: null,
  threads: [],
  threadsCursor: null,
  current: null, // the open thread
  runs: new Map(), // run id -> RunView, for the open thread
  answered: new Set(), // runs of the open thread shown from their stored answer
  loading: null, // while a thread loads over REST, its live events wait here
  pendingInput: null, // the input a thread_busy answer refused
};

// -- sign-in ---------------------------------------------------------------------------

let registering = false;

function setLoginMode(register) {
  registering = register;
  $('login-title').textContent = register ? 'Create an account' : 'Log in';
  $('login-submit').textContent = register ? 'Register' : 'Log in';
  $('switch-text').textContent = register ? 'Have an account?' : 'No account yet?';
  $('switch-mode').textContent = register ? 'Log in' : 'Register';
  $('name-field').hidden = !register;
  $('password').autocomplete = register ? 'new-password' : 'current-password';
  $('login-error').hidden = true;
}

async function submitLogin(event) {
  event.preventDefault();
  const email = $('email').value.trim();
  const password = $('password').value;
  const button = $('login-submit');
  button.disabled = true;
  $('login-error').hidden = true;
  try {
    if (registering) await app.session.register(email, password, $('display-name').value.trim());
    await app.session.login(email, password);
    $('password').value = '';
    await enterApp();
  } catch (error) {
    const box = $('login-error');
    box.textContent = error.code === 'too_many_attempts' && error.retryAfter
      ? `Too many attempts: try again in ${error.retryAfter} s.` : explain(error);
    box.hidden = false;
  } finally {
    button.disabled = false;
  }
}

function explain(error) {
  if (!(error instanceof ApiError)) return String(error.message ?? error);
  const fields = error.problem?.errors ?? error.problem?.invalid_params;
  if (Array.isArray(fields) && fields.length) {
    return fields.map((f) => `${(f.loc ?? [f.name]).slice(-1)[0]}: ${f.msg ?? f.reason}`).join('; ');
  }
  return error.message;
}

function showLogin() {
  app.socket?.stop();
  app.socket = null;
  $('app-view').hidden = true;
  $('logout').hidden = true;
  $('who').textContent = '';
  $('login-view').hidden = false;
  setLoginMode(registering);
  $('email').focus();
}

async function enterApp() {
  const { user } = app.session;
  $('login-view').hidden = true;
  $('app-view').hidden = false;
  $('logout').hidden = false;
  $('who').textContent = user.display_name || user.email;
  $('who').title = user.email;
  let welcomed;
  const firstWelcome = new Promise((resolve) => { welcomed = resolve; });
  app.socket = new LiveSocket({
    url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`,
    token: async (fresh) => {
      if (fresh || !app.session.accessToken) await app.session.refresh();
      return app.session.accessToken;
    },
    onEvent,
    onStatus: (status) => {
      showConnection(status);
      if (status.state === 'connected') welcomed();
    },
    onResync: resync,
    onFrame: (frame) => { if (frame.type === 'error') notify(`${frame.code}: ${frame.message}`, { error: true }); },
    onExpiry: (expiresAt) => { $('conn').dataset.expiresAt = expiresAt; },
  });
  app.socket.start();
  loadAgents();
  await loadThreads();
  // live events count from the socket's welcome: load the thread after it, or again
  const late = await Promise.race([firstWelcome.then(() => false), sleep(3000).then(() => true)]);
  const remembered = sessionStorage.getItem(THREAD_KEY);
  const first = app.threads.find((t) => t.id === remembered) ?? app.threads[0];
  if (first) await openThread(first.id);
  else showThread(null);
  if (late) firstWelcome.then(() => app.current && openThread(app.current.id));
}

function sleep(ms) {
  return new Promise((resolve) => { setTimeout(resolve, ms); });
}

// -- connection indicator --------------------------------------------------------------

function showConnection({ state, seq, attempt, delay, reason }) {
  const el = $('conn');
  const text = {
    connecting: 'connecting…',
    connected: 'connected',
    resuming: `resuming after #${seq}…`,
    resumed: `resumed after #${seq}`,
    reconnecting: delay ? `reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${attempt})` : `reconnecting (attempt ${attempt})`,
    resync: 'resync needed: reloading',
    refused: `refused: ${reason}`,
    offline: 'offline',
  }[state] ?? state;
  el.dataset.state = state;
  if (seq !== undefined) el.dataset.seq = seq;
  el.textContent = text;
  el.title = `WebSocket: ${text}`;
}

async function resync() {
  if (app.current) await openThread(app.current.id);
  loadThreads();
  if (app.socket?.state === 'resync') showConnection({ state: 'connected' });
}

// -- agents ----------------------------------------------------------------------------

async function loadAgents(tries = 5) {
  const select = $('agent');
  let agents = [];
  try { agents = (await app.session.api('/api/agents')).items; } catch { /* keep the default */ }
  select.replaceChildren(...(agents.length
    ? agents.map((a) => h('option', { value: a.name, title: a.description ?? '' }, a.name))
    : [h('option', { value: '' }, 'default agent')]));
  if (agents.some((a) => a.name === 'supervisor')) select.value = 'supervisor';
  if (!agents.length && tries > 1) setTimeout(() => loadAgents(tries - 1), 2000);
}

// -- threads ---------------------------------------------------------------------------

async function loadThreads(more = false) {
  const path = `/api/threads?limit=50${more && app.threadsCursor ? `&cursor=${encodeURIComponent(app.threadsCursor)}` : ''}`;
  try {
    const page = await app.session.api(path);
    app.threads = more ? [...app.threads, ...page.items] : page.items;
    app.threadsCursor = page.next_cursor;
  } catch (error) {
    notify(`Threads could not be loaded: ${explain(error)}`, { error: true });
  }
  renderThreads();
}

function renderThreads() {
  $('threads').replaceChildren(...app.threads.map((thread) => h('li', {},
    h('button', {
      class: `thread${thread.id === app.current?.id ? ' is-current' : ''}`, type: 'button',
      dataset: { threadId: thread.id }, onclick: () => openThread(thread.id),
    }, thread.title || DEFAULT_TITLE))));
  $('more-threads').hidden = !app.threadsCursor;
}

async function createThread() {
  try {
    const thread = await app.session.api('/api/threads', { method: 'POST', body: { title: DEFAULT_TITLE } });
    app.threads.unshift(thread);
    await openThread(thread.id);
    $('input').focus();
  } catch (error) {
    notify(`The thread could not be created: ${explain(error)}`, { error: true });
  }
}

async function renameThread(title) {
  const thread = app.current;
  const renamed = await app.session.api(`/api/threads/${thread.id}`, { method: 'PATCH', body: { title } });
  Object.assign(thread, renamed);
  const listed = app.threads.find((t) => t.id === thread.id);
  if (listed) Object.assign(listed, renamed);
  if (app.current?.id === thread.id) $('thread-title').textContent = renamed.title || DEFAULT_TITLE;
  renderThreads();
}

let deleteArmed = null;

async function deleteThread() {
  const button = $('delete');
  if (deleteArmed !== app.current?.id) { // a second click confirms
    deleteArmed = app.current.id;
    button.textContent = 'Delete for good?';
    setTimeout(() => { deleteArmed = null; button.textContent = 'Delete'; }, 4000);
    return;
  }
  deleteArmed = null;
  button.textContent = 'Delete';
  const id = app.current.id;
  try {
    await app.session.api(`/api/threads/${id}`, { method: 'DELETE' });
  } catch (error) {
    if (error.status !== 404) { notify(explain(error), { error: true }); return; }
  }
  app.threads = app.threads.filter((t) => t.id !== id);
  if (app.threads.length) await openThread(app.threads[0].id);
  else showThread(null);
  renderThreads();
  notify('Thread deleted.');
}

// -- the chat --------------------------------------------------------------------------

function showThread(thread) {
  app.current = thread;
  app.runs.clear();
  app.answered.clear();
  hideBusy();
  showUsage(false);
  if (thread) sessionStorage.setItem(THREAD_KEY, thread.id);
  else sessionStorage.removeItem(THREAD_KEY);
  $('thread-title').textContent = thread ? thread.title || DEFAULT_TITLE : 'No thread yet';
  for (const id of ['rename', 'delete', 'input', 'send']) $(id).disabled = !thread;
  $('messages').replaceChildren(h('p', { class: 'empty' }, thread
    ? 'Ask something, for example “what is 17 * 23”.'
    : 'Create a thread, then ask something, for example “what is 17 * 23”.'));
  renderThreads();
}

async function openThread(id) {
  const token = Symbol(id);
  app.loading = { token, threadId: id, events: [] };
  try {
    const thread = await app.session.api(`/api/threads/${id}`);
    const messages = await app.session.all(`/api/threads/${id}/messages`);
    if (app.loading?.token !== token) return; // another thread was opened meanwhile
    showThread(thread);
    await renderHistory(messages, token);
  } catch (error) {
    if (error.status === 404) {
      app.threads = app.threads.filter((t) => t.id !== id);
      showThread(null);
    }
    notify(`The thread could not be loaded: ${explain(error)}`, { error: true });
  } finally {
    if (app.loading?.token === token) {
      const waiting = app.loading.events;
      app.loading = null;
      waiting.forEach(route);
    }
  }
}

async function renderHistory(messages, token) {
  const list = $('messages');
  const answered = new Set(messages.filter((m) => m.role === 'assistant').map((m) => m.run_id));
  if (messages.length) list.replaceChildren();
  for (const message of messages) {
    if (message.role === 'user') {
      list.append(userBubble(message.content));
      if (message.run_id && !answered.has(message.run_id)) await restoreRun(message.run_id, token);
    } else {
      app.answered.add(message.run_id);
      list.append(h('div', { class: 'bubble assistant', dataset: { runId: message.run_id ?? '' } }, message.content));
    }
  }
  scrollDown(true);
}

/** A run without an answer yet: still running (its events so far), or ended without one. */
async function restoreRun(runId, token) {
  const run = await app.session.api(`/api/runs/${runId}`);
  if (app.loading?.token !== token) return;
  const view = addRunView(runId, { agent: run.agent, status: run.status });
  if (view.active) {
    const { items } = await app.session.api(`/api/runs/${runId}/events?after=0`);
    items.forEach((event) => view.apply(event));
  } else {
    view.fromRecord(run);
  }
}

function userBubble(text) {
  return h('div', { class: 'bubble user' }, text);
}

function addRunView(runId, { agent, status, input }) {
  let view = app.runs.get(runId);
  if (view) return view;
  const list = $('messages');
  list.querySelector('.empty')?.remove();
  if (input !== undefined) list.append(userBubble(input));
  view = new RunView(runId, { agent, status, onCancel: cancelRun, onAnswer: answerApproval });
  app.runs.set(runId, view);
  list.append(view.el);
  return view;
}

function onEvent(event) {
  if (app.loading?.threadId === event.thread_id) app.loading.events.push(event);
  else route(event);
}

function route(event) {
  if (event.thread_id !== app.current?.id || app.answered.has(event.run_id)) return;
  const stick = nearBottom();
  const input = event.type === 'agent_started' && !app.runs.has(event.run_id) ? event.payload.input : undefined;
  addRunView(event.run_id, { agent: event.agent, status: 'running', input }).apply(event);
  scrollDown(stick);
}

function nearBottom() {
  const list = $('messages');
  return list.scrollHeight - list.scrollTop - list.clientHeight < 120;
}

function scrollDown(really) {
  if (really) { const list = $('messages'); list.scrollTop = list.scrollHeight; }
}

async function send(multitask = 'reject') {
  const thread = app.current;
  const input = multitask === 'reject' ? $('input').value.trim() : app.pendingInput;
  if (!thread || !input) return;
  const agent = $('agent').value || undefined;
  hideBusy();
  $('send').disabled = true;
  try {
    const run = await app.session.api(`/api/threads/${thread.id}/runs`, { method: 'POST', body: { input, agent, multitask } });
    if ($('input').value.trim() === input) $('input').value = '';
    if (app.current?.id === thread.id) {
      addRunView(run.id, { agent: run.agent, status: run.status, input: run.input });
      scrollDown(true);
    }
    if (thread.title === DEFAULT_TITLE) renameThread(input.slice(0, 60)).catch(() => {});
  } catch (error) {
    if (error.code === 'thread_busy') {
      app.pendingInput = input;
      $('busy').hidden = false;
    } else {
      notify(`The run could not start: ${explain(error)}`, { error: true });
    }
  } finally {
    $('send').disabled = !app.current;
  }
}

function hideBusy() {
  $('busy').hidden = true;
}

async function cancelRun(view) {
  view.setStatus('cancelling');
  try {
    await app.session.api(`/api/runs/${view.runId}/cancel`, { method: 'POST' });
  } catch (error) {
    if (error.code !== 'run_finished') {
      view.setStatus('running');
      notify(`The run could not be cancelled: ${explain(error)}`, { error: true });
    }
  }
}

async function answerApproval(view, callId, approve) {
  view.answering(callId, approve, true);
  try {
    await app.session.api(`/api/runs/${view.runId}/approvals/${callId}`, { method: 'POST', body: { approve } });
  } catch (error) {
    view.answering(callId, approve, false);
    notify(`The answer was not taken: ${explain(error)}`, { error: true });
  }
}

// -- usage -----------------------------------------------------------------------------

function showUsage(show) {
  $('usage').hidden = !show;
  $('chat').hidden = show;
  $('show-usage').classList.toggle('is-current', show);
  if (show) {
    app.usage ??= new UsagePanel(app.session);
    app.usage.load();
  }
}

// -- wiring ----------------------------------------------------------------------------

function wire() {
  $('login-form').addEventListener('submit', submitLogin);
  $('switch-mode').addEventListener('click', () => setLoginMode(!registering));
  $('logout').addEventListener('click', () => app.session.logout());
  $('new-thread').addEventListener('click', createThread);
  $('more-threads').addEventListener('click', () => loadThreads(true));
  $('show-usage').addEventListener('click', () => showUsage(true));
  $('usage-close').addEventListener('click', () => showUsage(false));
  $('composer').addEventListener('submit', (event) => { event.preventDefault(); send(); });
  $('input').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) { event.preventDefault(); send(); }
  });
  $('busy-enqueue').addEventListener('click', () => send('enqueue'));
  $('busy-interrupt').addEventListener('click', () => send('interrupt'));
  $('busy-dismiss').addEventListener('click', hideBusy);
  $('rename').addEventListener('click', () => {
    $('rename-input').value = app.current?.title ?? '';
    $('rename-form').hidden = false;
    $('thread-title').hidden = true;
    $('rename-input').focus();
  });
  const closeRename = () => { $('rename-form').hidden = true; $('thread-title').hidden = false; };
  $('rename-cancel').addEventListener('click', closeRename);
  $('rename-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      await renameThread($('rename-input').value.trim());
      closeRename();
    } catch (error) {
      notify(`The thread could not be renamed: ${explain(error)}`, { error: true });
    }
  });
  $('delete').addEventListener('click', deleteThread);
}

async function main() {
  wire();
  let config;
  try {
    config = await loadConfig();
  } catch (error) {
    notify(`The page's configuration could not be loaded: ${error.message}`, { error: true });
    return;
  }
  app.session = new Session(config.auth_url);
  app.session.onSignedOut = showLogin;
  if (await app.session.restore()) await enterApp();
  else showLogin();
}

main();
