// The hub's models: search, then a model's card, files, versions, lineage graph and copy-paste snippets.
import { useEffect, useState } from 'react';
import { Background, ReactFlow } from '@xyflow/react';
import '@xyflow/react/dist/style.css';
import { api } from '../api.js';

function size(bytes) {
  if (bytes == null) return '';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let n = bytes;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function Lineage({ model, chain }) {
  const ids = [model, ...chain.map((l) => l.repo)];
  const nodes = ids.map((id, i) => ({
    id,
    position: { x: 0, y: i * 90 },
    data: { label: `${id}${i && !chain[i - 1].exists ? ' (not on this node)' : ''}` },
    style: { width: 300 },
  }));
  const edges = chain.map((l, i) => ({ id: `l${i}`, source: ids[i + 1], target: ids[i], label: l.relation || 'base of' }));
  return (
    <div className="lineage" data-testid="lineage">
      <ReactFlow nodes={nodes} edges={edges} fitView nodesDraggable={false} nodesConnectable={false} proOptions={{ hideAttribution: true }}>
        <Background />
      </ReactFlow>
    </div>
  );
}

function Snippets({ model }) {
  const origin = window.location.origin;
  const snippets = {
    huggingface_hub: `from huggingface_hub import snapshot_download

path = snapshot_download("${model}", endpoint="${origin}", token=TOKEN)`,
    openai: `from openai import OpenAI

client = OpenAI(base_url="${origin}/v1", api_key=TOKEN)
reply = client.chat.completions.create(
    model="${model}", messages=[{"role": "user", "content": "Hello!"}]
)
print(reply.choices[0].message.content)`,
    iollm: `export IOLLM_ENDPOINT=${origin} IOLLM_TOKEN=...
iollm pull ${model}
iollm run ${model} "Hello!"`,
  };
  return (
    <div className="snippets">
      {Object.entries(snippets).map(([name, code]) => (
        <div key={name} className="snippet" data-testid={`snippet-${name}`}>
          <div className="row"><b>{name}</b><button onClick={() => navigator.clipboard?.writeText(code)}>Copy</button></div>
          <pre>{code}</pre>
        </div>
      ))}
    </div>
  );
}

function ModelCard({ id }) {
  const [info, setInfo] = useState(null);
  const [log, setLog] = useState([]);
  const [error, setError] = useState('');
  useEffect(() => {
    setInfo(null);
    setError('');
    api(`/api/repos/model/${id}`).then(setInfo).catch((e) => setError(e.message));
    api(`/api/repos/model/${id}/log`).then((r) => setLog(r.commits)).catch(() => setLog([]));
  }, [id]);
  if (error) return <div className="error">{error}</div>;
  if (!info) return <div className="muted">Loading {id}…</div>;
  const card = info.card || {};
  const shown = ['kind', 'architecture', 'parameter_size', 'parameters', 'quantization', 'format', 'context_length', 'license', 'designer', 'description'];
  return (
    <div className="model-card" data-testid="model-card">
      <h2>{id}</h2>
      <table className="table small">
        <tbody>
          {shown.filter((k) => card[k] != null && card[k] !== '').map((k) => (
            <tr key={k}><th>{k}</th><td>{String(card[k])}</td></tr>
          ))}
          <tr><th>commit</th><td><code>{info.commit}</code></td></tr>
        </tbody>
      </table>
      <h3>Files</h3>
      <table className="table small" data-testid="model-files">
        <tbody>{(info.files || []).map((f) => <tr key={f.path}><td>{f.path}</td><td>{size(f.size)}</td><td><code>{f.sha256.slice(0, 12)}</code></td></tr>)}</tbody>
      </table>
      <h3>Versions</h3>
      <table className="table small" data-testid="model-versions">
        <tbody>
          {log.map((c) => (
            <tr key={c.commit}>
              <td><code>{c.commit.slice(0, 12)}</code></td><td>{c.message}</td><td>{c.author}</td><td>{c.created_at.slice(0, 19)}</td>
              <td>{Object.entries(info.refs?.tags || {}).filter(([, v]) => v === c.commit).map(([t]) => <span key={t} className="chip">{t}</span>)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h3>Lineage</h3>
      {info.lineage?.length ? <Lineage model={id} chain={info.lineage} /> : <div className="muted">No declared base model: this is a root.</div>}
      <h3>Use it</h3>
      <Snippets model={id} />
    </div>
  );
}

export default function ModelsPage({ arg }) {
  const [query, setQuery] = useState('');
  const [repos, setRepos] = useState([]);
  const [error, setError] = useState('');
  useEffect(() => {
    const timer = setTimeout(() => {
      api(`/api/repos?type=model${query ? `&search=${encodeURIComponent(query)}` : ''}`)
        .then((r) => { setRepos(r.repos); setError(''); })
        .catch((e) => setError(e.message));
    }, 150);
    return () => clearTimeout(timer);
  }, [query]);
  return (
    <div className="page two-columns">
      <aside className="list">
        <input aria-label="search models" placeholder="search models" value={query} onChange={(e) => setQuery(e.target.value)} />
        {error ? <div className="error">{error}</div> : null}
        <ul className="plain" data-testid="model-list">
          {repos.map((r) => (
            <li key={r.id} className={r.id === arg ? 'active' : ''}>
              <a href={`#/models/${r.id}`}>{r.id}</a>
              <div className="muted small">{[r.card?.parameter_size, r.card?.quantization, r.size ? size(r.size) : null].filter(Boolean).join(' · ')}</div>
            </li>
          ))}
        </ul>
      </aside>
      <section className="detail">{arg ? <ModelCard id={arg} /> : <div className="muted">Pick a model.</div>}</section>
    </div>
  );
}
