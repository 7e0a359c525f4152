// Evaluate the drawn workflow on a suite (checked like the path search checks), task by task.
import { useState } from 'react';
import { stream } from '../api.js';

export default function EvaluatePanel({ suites, current }) {
  const [suite, setSuite] = useState(suites[0]?.name || '');
  const [maxTasks, setMaxTasks] = useState(5);
  const [progress, setProgress] = useState(null);
  const [records, setRecords] = useState([]);
  const [summary, setSummary] = useState(null);
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  const run = async () => {
    setBusy(true);
    setError('');
    setRecords([]);
    setSummary(null);
    try {
      await stream('/api/editor/evaluate', { graph: current(), suite, max_tasks: maxTasks }, (ev) => {
        if (ev.type === 'evaluation_started') setProgress({ done: 0, total: ev.tasks });
        if (ev.type === 'task') {
          setProgress({ done: ev.done, total: ev.total });
          setRecords((r) => [...r, ev.record]);
        }
        if (ev.type === 'evaluation_finished') setSummary(ev);
        if (ev.type === 'error') setError(ev.message);
      });
    } catch (e) {
      setError(e.message);
    }
    setBusy(false);
  };

  return (
    <div className="panel-body" data-testid="evaluate-panel">
      <label className="field"><span>suite</span>
        <select value={suite} onChange={(e) => setSuite(e.target.value)}>
          {suites.map((s) => <option key={s.name} value={s.name}>{s.name}</option>)}
        </select>
      </label>
      <label className="field"><span>tasks (first N)</span>
        <input type="number" min={1} value={maxTasks} onChange={(e) => setMaxTasks(Number(e.target.value))} />
      </label>
      <button className="primary" disabled={busy || !suite} onClick={run}>Evaluate</button>
      {progress ? <progress value={progress.done} max={progress.total} /> : null}
      {error ? <div className="error">{error}</div> : null}
      {summary ? (
        <div className="totals" data-testid="evaluation">
          score {(summary.score * 100).toFixed(1)}% on {summary.tasks} tasks · {summary.cost_per_task.toFixed(0)} µcr/task ·{' '}
          {summary.latency_s.toFixed(2)} s/task{summary.errors ? ` · ${summary.errors} errors` : ''}
        </div>
      ) : null}
      <table className="table small">
        <tbody>
          {records.map((r) => (
            <tr key={r.id}><td>{r.id}</td><td>{r.score}</td><td title={r.answer}>{r.answer.slice(0, 40)}</td></tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
