// Launch a path search over the models of the drawn workflow (which races as candidate "drawn") and
// watch its progress; load the best path found onto the canvas.
import { useEffect, useState } from 'react';
import { api } from '../api.js';

export default function SearchPanel({ suites, current, onLoad }) {
  const [suite, setSuite] = useState(suites[0]?.name || '');
  const [maxTasks, setMaxTasks] = useState(8);
  const [maxTokens, setMaxTokens] = useState(48);
  const [budget, setBudget] = useState('');
  const [run, setRun] = useState(null);
  const [error, setError] = useState('');

  useEffect(() => {
    if (!run || run.state !== 'running') return undefined;
    const timer = setInterval(async () => {
      try {
        setRun(await api(`/api/editor/searches/${run.id}`));
      } catch (e) {
        setError(e.message);
      }
    }, 1000);
    return () => clearInterval(timer);
  }, [run]);

  const start = async () => {
    setError('');
    try {
      setRun(await api('/api/editor/searches', {
        method: 'POST',
        body: { graph: current(), suite, max_tasks: maxTasks, max_tokens: maxTokens, budget: budget ? Number(budget) : undefined },
      }));
    } catch (e) {
      setError(e.message);
    }
  };
  const cancel = async () => setRun(await api(`/api/editor/searches/${run.id}/cancel`, { method: 'POST' }));
  const best = run?.result?.best;
  const drawn = run?.result?.candidates?.find((c) => c.name === 'drawn');

  return (
    <div className="panel-body" data-testid="search-panel">
      <label className="field"><span>suite</span>
        <select value={suite} onChange={(e) => setSuite(e.target.value)}>
          {suites.map((s) => <option key={s.name} value={s.name}>{s.name}</option>)}
        </select>
      </label>
      <div className="row">
        <label className="field"><span>tasks</span><input type="number" value={maxTasks} onChange={(e) => setMaxTasks(Number(e.target.value))} /></label>
        <label className="field"><span>max tokens</span><input type="number" value={maxTokens} onChange={(e) => setMaxTokens(Number(e.target.value))} /></label>
        <label className="field"><span>budget</span><input placeholder="auto" value={budget} onChange={(e) => setBudget(e.target.value)} /></label>
      </div>
      <div className="row">
        <button className="primary" disabled={run?.state === 'running'} onClick={start}>Start search</button>
        <button disabled={run?.state !== 'running'} onClick={cancel}>Cancel</button>
      </div>
      {error ? <div className="error">{error}</div> : null}
      {run ? (
        <div className="totals" data-testid="search-progress">
          {run.state} · {run.phase} {run.done}/{run.total} · space {run.preview?.space_size} candidates, budget {run.preview?.budget}
          {run.total ? <progress value={run.done} max={run.total} /> : null}
          {run.error ? <div className="error">{run.error}</div> : null}
        </div>
      ) : null}
      {best ? (
        <div className="totals">
          best: <b>{best.name}</b> ({best.template}) score {best.heldout?.score?.toFixed?.(3)}
          <button onClick={() => onLoad(best.graph)}>Load onto canvas</button>
          {drawn ? (
            <div>your drawn workflow on the search split: quality {drawn.quality?.toFixed?.(3)} over {drawn.n} tasks,
              {' '}{drawn.cost?.toFixed?.(0)} µcr/task{run.result.finalists.includes('drawn') ? ' (a finalist)' : ''}</div>
          ) : null}
        </div>
      ) : null}
    </div>
  );
}
