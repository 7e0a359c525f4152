// The side panel for the selected node or edge: its id, parameters, inputs, and run-one / run-to-here.
import { useEffect, useState } from 'react';
import { FIELDS, getPath, setPath } from './fields.js';

function Field({ field, value, models, onChange }) {
  const id = `field-${field.key.replace('.', '-')}`;
  const [draft, setDraft] = useState('');
  const [bad, setBad] = useState(false);
  useEffect(() => {
    if (field.type === 'json') setDraft(value === undefined ? '' : JSON.stringify(value, null, 1));
  }, [field.type, value]);
  let input;
  if (field.type === 'model') {
    const options = models.includes(value) || !value ? models : [value, ...models];
    input = (
      <select id={id} value={value || ''} onChange={(e) => onChange(e.target.value)}>
        <option value="">(choose a model)</option>
        {options.map((m) => (
          <option key={m} value={m}>{models.includes(m) ? m : `${m} (not served here)`}</option>
        ))}
      </select>
    );
  } else if (field.type === 'select') {
    input = (
      <select id={id} value={value ?? ''} onChange={(e) => onChange(e.target.value || undefined)}>
        {field.options.map((o) => <option key={o} value={o}>{o || '(none)'}</option>)}
      </select>
    );
  } else if (field.type === 'textarea') {
    input = <textarea id={id} rows={field.rows || 4} value={value ?? ''} onChange={(e) => onChange(e.target.value)} />;
  } else if (field.type === 'lines') {
    input = (
      <textarea id={id} rows={3} value={(value || []).join('\n')}
        onChange={(e) => onChange(e.target.value.split('\n').map((s) => s.trim()).filter(Boolean))} />
    );
  } else if (field.type === 'json') {
    input = (
      <textarea id={id} rows={field.rows || 4} className={bad ? 'bad' : ''} value={draft}
        onChange={(e) => {
          setDraft(e.target.value);
          try {
            onChange(e.target.value.trim() === '' ? undefined : JSON.parse(e.target.value));
            setBad(false);
          } catch {
            setBad(true);
          }
        }} />
    );
  } else if (field.type === 'number') {
    input = (
      <input id={id} type="number" step={field.step || 1} value={value ?? ''}
        onChange={(e) => onChange(e.target.value === '' ? undefined : Number(e.target.value))} />
    );
  } else {
    input = <input id={id} type="text" value={value ?? ''} onChange={(e) => onChange(e.target.value)} />;
  }
  return (
    <label className="field" htmlFor={id}>
      <span>{field.label}</span>
      {input}
    </label>
  );
}

export default function NodePanel({ node, edge, nodes, edges, models, onConfig, onRename, onConnect, onRemove, onEdgeBranch, onRunTo, onRunOnly, running }) {
  const [name, setName] = useState(node?.id || '');
  const [source, setSource] = useState('');
  useEffect(() => setName(node?.id || ''), [node?.id]);
  if (edge) {
    return (
      <div className="panel-body" data-testid="edge-panel">
        <h3>Edge {edge.source} → {edge.target}</h3>
        <label className="field">
          <span>branch (for edges leaving a route node)</span>
          <input value={edge.data?.branch || ''} onChange={(e) => onEdgeBranch(edge.id, e.target.value)} />
        </label>
        <button className="danger" onClick={() => onRemove({ edges: [edge.id] })}>Delete edge</button>
      </div>
    );
  }
  if (!node) return <div className="panel-body muted">Select a node to edit it, or add one from the palette.</div>;
  const inputs = edges.filter((e) => e.target === node.id).map((e) => e.source);
  const candidates = nodes.filter((n) => n.id !== node.id && !inputs.includes(n.id) && n.data.kind !== 'output');
  return (
    <div className="panel-body" data-testid="node-panel">
      <h3>
        <span className="wf-kind">{node.data.kind}</span> {node.id}
      </h3>
      <label className="field" htmlFor="field-id">
        <span>id (used as {'{{'}{node.id}{'}}'} downstream)</span>
        <input id="field-id" value={name} onChange={(e) => setName(e.target.value)}
          onBlur={() => name !== node.id && onRename(node.id, name)}
          onKeyDown={(e) => e.key === 'Enter' && name !== node.id && onRename(node.id, name)} />
      </label>
      {FIELDS[node.data.kind]?.map((f) => (
        <Field key={f.key} field={f} models={models} value={getPath(node.data.config, f.key)}
          onChange={(v) => onConfig(node.id, setPath(node.data.config, f.key, v))} />
      ))}
      <div className="field">
        <span>inputs</span>
        <div className="inputs">
          {inputs.map((i) => (
            <span key={i} className="chip">
              {i} <button title="disconnect" onClick={() => onRemove({ edges: [`${i}->${node.id}`] })}>×</button>
            </span>
          ))}
          {inputs.length === 0 ? <span className="muted">none</span> : null}
        </div>
        <div className="row">
          <select aria-label="connect from" value={source} onChange={(e) => setSource(e.target.value)}>
            <option value="">connect from…</option>
            {candidates.map((n) => <option key={n.id} value={n.id}>{n.id}</option>)}
          </select>
          <button disabled={!source} onClick={() => { onConnect({ source, target: node.id }); setSource(''); }}>Connect</button>
        </div>
      </div>
      <div className="row">
        <button disabled={running} onClick={() => onRunTo(node.id)} title="Run this node and what it needs; reuses cached upstream outputs">Run to here</button>
        <button disabled={running} onClick={() => onRunOnly(node.id)} title="Rerun only this node from cached upstream outputs">Run this node</button>
        <button className="danger" onClick={() => onRemove({ nodes: [node.id] })}>Delete</button>
      </div>
    </div>
  );
}
