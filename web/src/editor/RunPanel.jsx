// Input, Run, and what the last run did: per-node status, tokens, cost and latency, and the totals.
import { useAnyNodeState, nodeState } from './store.js';

export default function RunPanel({ input, setInput, onRun, onStop, running, totals, error, nodes }) {
  useAnyNodeState();
  return (
    <div className="panel-body" data-testid="run-panel">
      <label className="field" htmlFor="run-input">
        <span>input ({'{{input}}'})</span>
        <textarea id="run-input" rows={3} value={input} onChange={(e) => setInput(e.target.value)} />
      </label>
      <div className="row">
        <button className="primary" disabled={running} onClick={onRun} data-testid="run">Run</button>
        <button disabled={!running} onClick={onStop}>Stop</button>
      </div>
      {error ? <div className="error" data-testid="run-error">{error}</div> : null}
      {totals ? (
        <div className="totals" data-testid="run-totals">
          <b>Total</b> {totals.prompt_tokens}+{totals.completion_tokens} tokens · {totals.calls} calls ·{' '}
          {totals.cost} µcr · latency {totals.latency_s}s (wall {totals.wall_s}s)
          <div className="answer" data-testid="run-answer">{totals.answer}</div>
        </div>
      ) : null}
      <table className="table small">
        <thead>
          <tr><th>node</th><th>status</th><th>tokens</th><th>µcr</th><th>s</th></tr>
        </thead>
        <tbody>
          {nodes.map((n) => {
            const live = nodeState.get(n.id);
            const t = live.trace;
            return (
              <tr key={n.id} data-testid={`run-row-${n.id}`}>
                <td>{n.id}</td>
                <td>{live.fromCache ? 'cached' : live.status || ''}</td>
                <td>{t ? `${t.prompt_tokens}+${t.completion_tokens}` : ''}</td>
                <td>{t ? t.cost : ''}</td>
                <td>{t ? t.seconds.toFixed(2) : ''}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
