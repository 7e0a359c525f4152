// Launch a path search over the models of the drawn workflow (which races as candidate "drawn") and
// watch its progress; past searches are kept by the node (across restarts), each with its quality/cost
// plot; any path on the front opens on the canvas in one click, as a new unsaved workflow.
import { useCallback, useEffect, useState } from 'react';
import { api } from '../api.js';
import { FrontTable, SearchPlot } from './SearchPareto.jsx';

const STATE_NOTE = {
  interrupted: 'interrupted: the node stopped while it ran; below is what it had found by then',
  cancelled: 'cancelled: below is what it had found by then',
  failed: 'failed: below is what it had found by then',
};

export default function SearchPanel({ suites, current, onLoad }) {
  const [suite, setSuite] = useState(suites[0]?.name || '');
  const [maxTasks, setMaxTasks] = useState(8);
  const [maxTokens, setMaxTokens] = useState(48);
  const [budget, setBudget] = useState('');
  const [run, setRun] = useState(null);
  const [past, setPast] = useState([]);
  const [error, setError] = useState('');

  const refresh = useCallback(async () => {
    try {
      setPast((await api('/api/editor/searches')).searches || []);
    } catch (e) {
      setError(e.message);
    }
  }, []);
  useEffect(() => { refresh(); }, [refresh]);

  useEffect(() => {
    if (!run || run.state !== 'running') return undefined;
    const timer = setInterval(async () => {
      try {
        const now = await api(`/api/editor/searches/${run.id}`);
        setRun(now);
        if (now.state !== 'running') refresh();
      } catch (e) {
        setError(e.message);
      }
    }, 1000);
    return () => clearInterval(timer);
  }, [run, refresh]);

  const launch = async (body) => {
    setError('');
    try {
      setRun(await api('/api/editor/searches', { method: 'POST', body }));
      refresh();
    } catch (e) {
      setError(e.message);
    }
  };
  const start = () => launch({ graph: current(), suite, max_tasks: maxTasks, max_tokens: maxTokens, budget: budget ? Number(budget) : undefined });
  const again = () => launch(run.config);
  const show = async (id) => {
    setError('');
    try {
      setRun(await api(`/api/editor/searches/${id}`));
    } catch (e) {
      setError(e.message);
    }
  };
  const cancel = async () => {
    setRun(await api(`/api/editor/searches/${run.id}/cancel`, { method: 'POST' }));
    refresh();
  };
  const open = (entry) => onLoad({ ...entry.graph, name: entry.graph.name || entry.name });

  const result = run?.result;
  const best = result?.best;
  const drawn = result?.candidates?.find((c) => c?.name === 'drawn');
  const heldout = best?.heldout?.score;

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
        <div className="totals" data-testid="search-progress" data-state={run.state}>
          <b>{run.suite || run.config?.suite || 'search'}</b> · {run.state} · {run.phase} {run.done}/{run.total}
          {' '}· space {run.preview?.space_size ?? '?'} candidates, budget {run.preview?.budget ?? '?'}
          {run.state === 'running' && run.total ? <progress value={run.done} max={run.total} /> : null}
          {STATE_NOTE[run.state] ? <div className="muted" data-testid="search-note">{STATE_NOTE[run.state]}</div> : null}
          {run.error ? <div className="error">{run.error}</div> : null}
          {run.state !== 'running' && run.state !== 'done' && run.config?.graph ? (
            <button onClick={again} data-testid="search-again">Search again</button>
          ) : null}
        </div>
      ) : null}
      {result ? (
        <>
          <SearchPlot result={result} onOpen={open} />
          <div className="muted">
            {result.partial ? 'found so far (search split only)' : 'chosen on the search split; held-out scores in the table'}
            {' · '}<span style={{ color: '#2b7' }}>●</span> front <span style={{ color: '#67a' }}>●</span> other paths
            {' '}<span style={{ color: '#e80' }}>○</span> chosen
          </div>
          <FrontTable result={result} onOpen={open} />
        </>
      ) : null}
      {best?.graph ? (
        <div className="totals">
          {result.partial ? 'best so far' : 'best'}: <b>{best.name}</b> ({best.template})
          {typeof heldout === 'number' ? ` held-out score ${heldout.toFixed(3)}` : ''}
          <button onClick={() => open(best)} data-testid="open-best">Load onto canvas</button>
          {drawn ? (
            <div>your drawn workflow on the search split: quality {drawn.quality?.toFixed?.(3)} over {drawn.n} tasks,
              {' '}{drawn.cost?.toFixed?.(0)} µcr/task{(result.finalists || []).includes('drawn') ? ' (a finalist)' : ''}</div>
          ) : null}
        </div>
      ) : null}
      {past.length ? (
        <>
          <h4>Your searches</h4>
          <table className="table small" data-testid="search-history">
            <tbody>
              {past.map((s) => (
                <tr key={s.id} className={s.id === run?.id ? 'record' : ''}>
                  <td><button className="link" onClick={() => show(s.id)} data-testid={`search-history-${s.id}`}>{s.suite || s.id}</button></td>
                  <td>{s.state}</td>
                  <td>{s.best?.name || ''}</td>
                  <td className="muted">{(s.started || '').slice(5, 16).replace('T', ' ')}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      ) : null}
    </div>
  );
}
