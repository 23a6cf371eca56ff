// One run as its events arrive: who (which agent) does what, tool calls folded
// into <details>, the answer streaming in, and how the run ended.

import { h } from './dom.js';

const LABELS = {
  queued: 'queued', running: 'running', cancelling: 'cancelling…', succeeded: 'done',
  failed: 'failed', cancelled: 'cancelled', timed_out: 'timed out',
};
const ACTIVE = new Set(['queued', 'running', 'cancelling']);
const PALETTE = 8;

/** A stable colour per agent name (one of the style sheet's eight). */
export function agentChip(name) {
  let hash = 0;
  for (const char of name) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return h('span', { class: `agent agent-c${hash % PALETTE}`, title: `agent ${name}` }, name);
}

function json(value) {
  return h('pre', { class: 'json' }, JSON.stringify(value, null, 2));
}

export class RunView {
  constructor(runId, { agent = 'agent', status = 'queued', onCancel, onAnswer }) {
    this.runId = runId;
    this.onAnswer = onAnswer;
    this.approvals = new Map(); // call id -> its pending card's buttons
    this.lastSeq = 0;
    this.tools = new Map();
    this.stream = null;
    this.badge = h('span', { class: 'badge' });
    this.cancelButton = h('button', { class: 'ghost danger small cancel', type: 'button', onclick: () => onCancel(this) }, 'Cancel');
    this.timeline = h('ol', { class: 'timeline' });
    this.end = h('div', { class: 'run-end' });
    this.el = h('article', { class: 'run', dataset: { runId } },
      h('header', { class: 'run-head' }, agentChip(agent), this.badge, h('span', { class: 'spacer' }), this.cancelButton),
      this.timeline, this.end);
    this.setStatus(status);
  }

  get active() { return ACTIVE.has(this.status); }

  setStatus(status) {
    if (status === 'cancelling' && !this.active) return;
    this.status = status;
    this.el.dataset.status = status;
    this.badge.textContent = LABELS[status] ?? status;
    this.badge.className = `badge badge-${status}`;
    this.cancelButton.hidden = !ACTIVE.has(status) || status === 'cancelling';
  }

  /** Apply one event of this run; an event seen before (same or older seq) is ignored. */
  apply(event) {
    if (event.seq <= this.lastSeq) return;
    this.lastSeq = event.seq;
    const handler = this[`_${event.type}`];
    if (handler) handler.call(this, event, event.payload ?? {});
    else this._item(event, event.type, json(event.payload));
  }

  /** A run known only from its record (its events are no longer needed or kept). */
  fromRecord(run) {
    this.lastSeq = Infinity; // its events, if any still arrive, are already told here
    this.setStatus(run.status);
    if (run.result) this._final(run.result);
    if (run.error) this._failure(run.error.code, run.error.message);
    if (run.status === 'cancelled') this.end.append(h('p', { class: 'muted' }, 'Cancelled.'));
  }

  _item(event, label, ...body) {
    const item = h('li', { class: `ev ev-${event.type}`, dataset: { seq: event.seq, agent: event.agent ?? '' } },
      h('div', { class: 'ev-head' }, agentChip(event.agent ?? '?'), h('span', { class: 'ev-label' }, label),
        h('span', { class: 'seq', title: 'event number' }, `#${event.seq}`)),
      ...body);
    this.timeline.append(item);
    return item;
  }

  _agent_started(event) {
    if (this.status === 'queued') this.setStatus('running');
    this._item(event, 'started');
  }

  _agent_thinking(event, { text, step }) {
    this._item(event, `thinking · step ${step}`, h('p', { class: 'thought' }, text));
  }

  _tool_call(event, { call_id: callId, tool, arguments: args }) {
    const state = h('span', { class: 'tool-state' }, 'running…');
    const body = h('div', { class: 'tool-body' }, h('h4', {}, 'arguments'), json(args ?? {}));
    const details = h('details', { class: 'tool', dataset: { callId, tool } },
      h('summary', {}, h('span', { class: 'tool-name' }, tool), state), body);
    const item = this._item(event, 'tool call', details);
    this.tools.set(callId, { item, state, body });
  }

  /** A call that waits for the user: the tool, its arguments, Approve and Reject. */
  _approval_required(event, { call_id: callId, tool, arguments: args, expires_at: expiresAt }) {
    const answer = (approve) => this.onAnswer?.(this, callId, approve);
    const approve = h('button', { class: 'primary small approve', type: 'button', onclick: () => answer(true) }, 'Approve');
    const reject = h('button', { class: 'ghost danger small reject', type: 'button', onclick: () => answer(false) }, 'Reject');
    const state = h('span', { class: 'approval-state muted' }, `waiting for you until ${new Date(expiresAt).toLocaleTimeString()}`);
    const card = h('div', { class: 'approval', dataset: { callId, tool } },
      h('p', {}, 'The agent wants to call ', h('span', { class: 'tool-name' }, tool), ' with:'), json(args ?? {}),
      h('div', { class: 'approval-actions' }, approve, reject, state));
    this._item(event, 'approval needed', card);
    this.approvals.set(callId, { approve, reject, state });
  }

  /** The page's own answer went out (or failed: the buttons come back). */
  answering(callId, approve, pending) {
    const card = this.approvals.get(callId);
    if (!card) return;
    card.approve.disabled = card.reject.disabled = pending;
    card.state.textContent = pending ? (approve ? 'approving…' : 'rejecting…') : 'not answered';
  }

  _settle(callId, text) {
    const card = this.approvals.get(callId);
    if (!card) return;
    card.approve.remove();
    card.reject.remove();
    card.state.textContent = text;
    this.approvals.delete(callId);
  }

  _tool_executing(event, payload) {
    this._settle(payload.call_id, 'approved');
    this._tool_call(event, payload);
  }

  _tool_completed(event, payload) {
    if (payload.error?.code === 'rejected') this._settle(payload.call_id, 'rejected');
    if (!this.tools.has(payload.call_id)) this._tool_call(event, { ...payload, arguments: undefined });
    const { item, state, body } = this.tools.get(payload.call_id);
    item.classList.add(payload.ok ? 'ok' : 'failed');
    state.textContent = payload.ok ? `ok · ${payload.duration_ms} ms` : `error · ${payload.error?.code ?? 'failed'}`;
    body.append(h('h4', {}, payload.ok ? 'result' : 'error'), json(payload.ok ? payload.result : payload.error));
  }

  _partial_result(event, { delta }) {
    if (!this.stream) {
      this.streamText = document.createTextNode('');
      this.stream = h('div', { class: 'answer streaming' },
        h('div', { class: 'answer-head' }, agentChip(event.agent ?? '?'), h('span', { class: 'ev-label' }, 'answer')),
        h('div', { class: 'stream' }, this.streamText));
      this.timeline.after(this.stream);
    }
    this.streamText.appendData(delta);
  }

  _agent_completed(event, { result, duration_ms: ms, tool_calls: calls }) {
    this.setStatus('succeeded');
    this.stream?.classList.remove('streaming');
    if (!this.stream || this.streamText.data !== result) this._final(result, event.agent);
    this.end.append(h('p', { class: 'muted meta' }, `${ms} ms · ${calls} tool call${calls === 1 ? '' : 's'}`));
  }

  _agent_failed(event, { error, cause }) {
    this.setStatus(cause === 'timeout' ? 'timed_out' : 'failed');
    this.stream?.classList.remove('streaming');
    this._failure(error?.code, error?.message, cause);
  }

  _agent_cancelled(event, { by }) {
    this.setStatus('cancelled');
    this.stream?.classList.remove('streaming');
    for (const callId of [...this.approvals.keys()]) this._settle(callId, by === 'approval_timeout' ? 'not answered in time' : 'cancelled');
    const why = { interrupt: 'cancelled by a newer run', approval_timeout: 'cancelled: the approval was not answered in time' };
    this._item(event, why[by] ?? 'cancelled');
  }

  _final(text, agent) {
    this.end.append(h('div', { class: 'final' }, agent ? agentChip(agent) : null, h('div', { class: 'final-text' }, text)));
  }

  _failure(code, message, cause) {
    const why = cause && cause !== 'error' ? ` (${cause.replace('_', ' ')})` : '';
    this.end.append(h('p', { class: 'failure' }, `The run failed${why}: ${message ?? 'unknown error'}`,
      code ? h('code', {}, code) : null));
  }
}
