// Named versions kept in the hub (space repository OWNER/NAME): save, list, diff two, restore one.
import { useCallback, useEffect, useState } from 'react';
import { api } from '../api.js';

function DiffView({ diff }) {
  if (diff.same) return <div className="muted" data-testid="diff">No changes (layout aside).</div>;
  return (
    <div className="diff" data-testid="diff">
      {diff.added.map((n) => <div key={`a${n.id}`} className="plus">+ node {n.id} ({n.kind})</div>)}
      {diff.removed.map((n) => <div key={`r${n.id}`} className="minus">− node {n.id} ({n.kind})</div>)}
      {diff.changed.map((c) => (
        <div key={`c${c.id}`} className="changed">
          ~ node {c.id}:{' '}
          {Object.entries(c.fields).map(([k, v]) => (
            <span key={k}>{k}: {JSON.stringify(v.old)} → {JSON.stringify(v.new)}; </span>
          ))}
        </div>
      ))}
      {diff.edges_added.map((e) => <div key={`ea${e.from}${e.to}`} className="plus">+ edge {e.from} → {e.to}</div>)}
      {diff.edges_removed.map((e) => <div key={`er${e.from}${e.to}`} className="minus">− edge {e.from} → {e.to}</div>)}
      {Object.entries(diff.meta).map(([k, v]) => <div key={k} className="changed">~ {k}: {v.old} → {v.new}</div>)}
    </div>
  );
}

export default function VersionsPanel({ name, setName, current, onLoad, user }) {
  const [version, setVersion] = useState('');
  const [versions, setVersions] = useState([]);
  const [picked, setPicked] = useState([]);
  const [diff, setDiff] = useState(null);
  const [message, setMessage] = useState('');
  const [error, setError] = useState('');
  const [saved, setSaved] = useState([]);
  const workflow = name && user ? `${user}/${name}` : null;

  const refresh = useCallback(async () => {
    if (!workflow) return;
    try {
      setVersions((await api(`/api/editor/workflows/${workflow}/versions`)).versions);
    } catch (e) {
      if (e.status !== 404) setError(e.message);
      setVersions([]);
    }
  }, [workflow]);

  useEffect(() => {
    refresh();
    api('/api/editor/workflows').then((r) => setSaved(r.workflows)).catch(() => setSaved([]));
  }, [refresh]);

  const act = async (fn) => {
    setError('');
    setMessage('');
    try {
      await fn();
    } catch (e) {
      setError(e.message);
    }
  };

  const save = () => act(async () => {
    const r = await api(`/api/editor/workflows/${workflow}/versions`, { method: 'POST', body: { graph: current(), version } });
    setMessage(`Saved ${r.version} (${r.commit.slice(0, 12)})`);
    setVersion('');
    await refresh();
  });
  const restore = (commit) => act(async () => {
    const r = await api(`/api/editor/workflows/${workflow}/restore`, { method: 'POST', body: { revision: commit } });
    onLoad(r.graph);
    setMessage(`Restored ${commit.slice(0, 12)} as a new version`);
    await refresh();
  });
  const open = (commit) => act(async () => {
    const r = await api(`/api/editor/workflows/${workflow}/graph?revision=${commit}`);
    onLoad(r.graph);
  });
  const compare = () => act(async () => {
    const [a, b] = picked;
    setDiff(await api(`/api/editor/workflows/${workflow}/diff?old=${a}&new=${b}`));
  });
  const openSaved = (id) => act(async () => {
    const r = await api(`/api/editor/workflows/${id}/graph`);
    setName(id.split('/')[1]);
    onLoad(r.graph);
  });
  const toggle = (commit) => {
    setDiff(null);
    setPicked((p) => (p.includes(commit) ? p.filter((c) => c !== commit) : [...p, commit].slice(-2)));
  };

  if (!user) return <div className="panel-body muted">Sign in to keep versions in the hub.</div>;
  return (
    <div className="panel-body" data-testid="versions-panel">
      <label className="field" htmlFor="wf-name">
        <span>workflow name (stored as {user}/{name || '…'})</span>
        <input id="wf-name" value={name} onChange={(e) => setName(e.target.value)} />
      </label>
      <div className="row">
        <input aria-label="version name" placeholder="version name, e.g. v1" value={version} onChange={(e) => setVersion(e.target.value)} />
        <button className="primary" disabled={!workflow} onClick={save} data-testid="save-version">Save version</button>
      </div>
      {message ? <div className="ok" data-testid="versions-message">{message}</div> : null}
      {error ? <div className="error">{error}</div> : null}
      <table className="table small" data-testid="versions">
        <thead><tr><th /><th>version</th><th>commit</th><th>when</th><th /></tr></thead>
        <tbody>
          {versions.map((v) => (
            <tr key={v.commit} data-testid={`version-${v.version}`}>
              <td><input type="checkbox" aria-label={`pick ${v.version}`} checked={picked.includes(v.commit)} onChange={() => toggle(v.commit)} /></td>
              <td>{v.version}</td>
              <td><code>{v.commit.slice(0, 10)}</code></td>
              <td>{v.created_at.slice(5, 19).replace('T', ' ')}</td>
              <td className="row">
                <button onClick={() => open(v.commit)}>Open</button>
                <button onClick={() => restore(v.commit)} data-testid={`restore-${v.version}`}>Restore</button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <button disabled={picked.length !== 2} onClick={compare} data-testid="compare">Compare the two picked</button>
      {diff ? <DiffView diff={diff} /> : null}
      {saved.length ? (
        <>
          <h4>Saved workflows</h4>
          <ul className="plain">
            {saved.map((w) => (
              <li key={w.workflow}>
                <a href="#" onClick={(e) => { e.preventDefault(); openSaved(w.workflow); }}>{w.workflow}</a>{' '}
                <span className="muted">{w.version}</span>
              </li>
            ))}
          </ul>
        </>
      ) : null}
    </div>
  );
}
