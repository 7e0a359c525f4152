// The workflow editor: a React Flow canvas over the workflow JSON, with palette, side panel, undo/redo,
// auto-layout, live validation, streamed runs, versions, evaluation, search and publishing.
import { useCallback, useEffect, useRef, useState } from 'react';
import { Background, Controls, MiniMap, ReactFlow, ReactFlowProvider, applyEdgeChanges, applyNodeChanges, useReactFlow } from '@xyflow/react';
import '@xyflow/react/dist/style.css';
import { api, download, stream } from '../api.js';
import EvaluatePanel from './EvaluatePanel.jsx';
import NodePanel from './NodePanel.jsx';
import Palette, { DRAG_TYPE } from './Palette.jsx';
import PublishPanel from './PublishPanel.jsx';
import RunPanel from './RunPanel.jsx';
import SearchPanel from './SearchPanel.jsx';
import VersionsPanel from './VersionsPanel.jsx';
import WorkflowNode from './WorkflowNode.jsx';
import { useHistory } from './history.js';
import { nodeState } from './store.js';
import { STARTER, ancestors, flowEdge, layout, nextId, renameNode, signatures, toFlow, toWorkflow } from './workflow.js';

const NODE_TYPES = { wf: WorkflowNode };
const TABS = ['node', 'run', 'versions', 'evaluate', 'search', 'publish'];
const RUN_KEYS = ['status', 'text', 'trace', 'fromCache'];

function semanticKey(nodes, edges) {
  return JSON.stringify([nodes.map((n) => [n.id, n.data]), edges.map((e) => [e.source, e.target, e.data?.branch])]);
}

// The graph's meaning, recomputed only when a node's id or data or an edge changed: a drag moves
// positions 60 times a second and must not pay for serialising the whole graph each time.
function useSemanticKey(nodes, edges) {
  const memo = useRef({ parts: [], edges: null, key: '' });
  const same = memo.current.edges === edges && memo.current.parts.length === nodes.length
    && nodes.every((n, i) => memo.current.parts[i][0] === n.id && memo.current.parts[i][1] === n.data);
  if (!same) memo.current = { parts: nodes.map((n) => [n.id, n.data]), edges, key: semanticKey(nodes, edges) };
  return memo.current.key;
}

function Editor({ user, catalog }) {
  const flow = useReactFlow();
  const [nodes, setNodes] = useState([]);
  const [edges, setEdges] = useState([]);
  const [meta, setMeta] = useState({ name: STARTER.name, description: '' });
  const [selected, setSelected] = useState({ node: null, edge: null });
  const [tab, setTab] = useState('node');
  const [graphProblems, setGraphProblems] = useState([]);
  const [input, setInput] = useState('What is 2 plus 3?');
  const [running, setRunning] = useState(false);
  const [totals, setTotals] = useState(null);
  const [runError, setRunError] = useState('');
  const history = useHistory();
  const abort = useRef(null);
  const lastRun = useRef({ outputs: {}, sigs: {} });
  const wrapper = useRef(null);
  const live = useRef({ nodes, edges, meta });
  live.current = { nodes, edges, meta };

  const current = useCallback(() => toWorkflow(live.current.nodes, live.current.edges, live.current.meta), []);

  // Every structural change goes through here so it can be undone.
  const change = useCallback((nextNodes, nextEdges) => {
    history.record(live.current.nodes, live.current.edges);
    setNodes(nextNodes);
    setEdges(nextEdges);
  }, [history]);

  const load = useCallback((workflow) => {
    const { nodes: n, edges: e } = toFlow(workflow);
    change(n, e);
    setMeta({ name: workflow.name || 'workflow', description: workflow.description || '' });
    nodeState.clear(RUN_KEYS);
    setTotals(null);
    requestAnimationFrame(() => flow.fitView({ duration: 0, maxZoom: 1 }));
  }, [change, flow]);

  useEffect(() => {
    window.__iollm = { load, current, count: () => live.current.nodes.length };
    document.body.dataset.ready = 'true';
    window.__iollmReadyAt ??= performance.now(); // time to interactive, read by bench/editor.py
    return () => {
      delete document.body.dataset.ready;
    };
  }, [load, current]);

  // Validation against the node (cycles, missing inputs, unknown models), marked on the canvas.
  const key = useSemanticKey(nodes, edges);
  useEffect(() => {
    const timer = setTimeout(async () => {
      if (!live.current.nodes.length) {
        nodeState.clear(['problems']);
        setGraphProblems([]);
        return;
      }
      try {
        const reply = await api('/api/editor/validate', { method: 'POST', body: { graph: current() } });
        const byNode = {};
        const general = [];
        reply.problems.forEach((p) => (p.node ? (byNode[p.node] ||= []).push(p.message) : general.push(p.message)));
        live.current.nodes.forEach((n) => {
          const now = byNode[n.id] || [];
          const before = nodeState.get(n.id).problems || [];
          if (now.join('\n') !== before.join('\n')) nodeState.patch(n.id, { problems: now });
        });
        setGraphProblems(general);
      } catch (e) {
        setGraphProblems([`cannot validate: ${e.message}`]);
      }
    }, 200);
    return () => clearTimeout(timer);
  }, [key, current]);

  const onNodesChange = useCallback((changes) => {
    if (changes.some((c) => c.type === 'remove')) history.record(live.current.nodes, live.current.edges);
    setNodes((ns) => applyNodeChanges(changes, ns));
  }, [history]);
  const onEdgesChange = useCallback((changes) => {
    if (changes.some((c) => c.type === 'remove')) history.record(live.current.nodes, live.current.edges);
    setEdges((es) => applyEdgeChanges(changes, es));
  }, [history]);
  const onConnect = useCallback(({ source, target }) => {
    const { nodes: ns, edges: es } = live.current;
    if (es.some((e) => e.source === source && e.target === target)) return;
    change(ns, [...es, flowEdge(source, target)]);
  }, [change]);
  const onNodeDragStart = useCallback(() => history.record(live.current.nodes, live.current.edges), [history]);
  const onSelectionChange = useCallback(({ nodes: ns, edges: es }) => {
    setSelected({ node: ns[0]?.id || null, edge: ns.length ? null : es[0]?.id || null });
  }, []);

  const addNode = useCallback((item, position) => {
    const { nodes: ns, edges: es } = live.current;
    const id = nextId(ns, item.base);
    let at = position;
    if (!at && ns.length) {
      const last = ns.reduce((a, b) => (b.position.x > a.position.x ? b : a));
      at = { x: last.position.x + 270, y: last.position.y };
    } else if (!at) {
      const box = wrapper.current.getBoundingClientRect();
      at = flow.screenToFlowPosition({ x: box.left + 40, y: box.top + box.height / 3 });
    }
    const node = { id, type: 'wf', position: at, data: { kind: item.kind, config: structuredClone(item.config) }, selected: true };
    change([...ns.map((n) => ({ ...n, selected: false })), node], es);
    requestAnimationFrame(() => {
      // Move the view only when the new node would be off screen: a steady canvas is easier to work on.
      const box = wrapper.current.getBoundingClientRect();
      const corner = flow.flowToScreenPosition({ x: at.x + 220, y: at.y + 96 });
      const origin = flow.flowToScreenPosition(at);
      if (origin.x < box.left || origin.y < box.top || corner.x > box.right || corner.y > box.bottom) {
        flow.fitView({ duration: 0, maxZoom: 1 });
      }
    });
    setSelected({ node: id, edge: null });
    setTab('node');
  }, [change, flow]);

  const onDrop = useCallback((event) => {
    event.preventDefault();
    const raw = event.dataTransfer.getData(DRAG_TYPE);
    if (raw) addNode(JSON.parse(raw), flow.screenToFlowPosition({ x: event.clientX, y: event.clientY }));
  }, [addNode, flow]);

  const undo = useCallback(() => {
    const prev = history.undo(live.current.nodes, live.current.edges);
    if (prev) {
      setNodes(prev.nodes);
      setEdges(prev.edges);
    }
  }, [history]);
  const redo = useCallback(() => {
    const next = history.redo(live.current.nodes, live.current.edges);
    if (next) {
      setNodes(next.nodes);
      setEdges(next.edges);
    }
  }, [history]);
  const autoLayout = useCallback(() => {
    change(layout(live.current.nodes, live.current.edges), live.current.edges);
    requestAnimationFrame(() => flow.fitView({ duration: 0, maxZoom: 1 }));
  }, [change, flow]);

  useEffect(() => {
    const onKey = (e) => {
      if (['INPUT', 'TEXTAREA', 'SELECT'].includes(document.activeElement?.tagName)) return;
      const mod = e.ctrlKey || e.metaKey;
      if (mod && e.key.toLowerCase() === 'z' && !e.shiftKey) { e.preventDefault(); undo(); }
      if (mod && (e.key.toLowerCase() === 'y' || (e.key.toLowerCase() === 'z' && e.shiftKey))) { e.preventDefault(); redo(); }
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [undo, redo]);

  const setConfig = useCallback((id, config) => {
    change(live.current.nodes.map((n) => (n.id === id ? { ...n, data: { ...n.data, config } } : n)), live.current.edges);
  }, [change]);
  const rename = useCallback((from, to) => {
    if (!/^[A-Za-z_][A-Za-z0-9_-]{0,63}$/.test(to) || live.current.nodes.some((n) => n.id === to)) {
      setRunError(`cannot rename ${from} to ${to}: use a new id of letters, digits, '_' or '-'`);
      return;
    }
    const next = renameNode(live.current.nodes, live.current.edges, from, to);
    change(next.nodes, next.edges);
    setSelected({ node: to, edge: null });
  }, [change]);
  const remove = useCallback(({ nodes: gone = [], edges: cut = [] }) => {
    const { nodes: ns, edges: es } = live.current;
    change(
      ns.filter((n) => !gone.includes(n.id)),
      es.filter((e) => !cut.includes(e.id) && !gone.includes(e.source) && !gone.includes(e.target)),
    );
    setSelected({ node: null, edge: null });
  }, [change]);
  const setBranch = useCallback((id, branch) => {
    change(live.current.nodes, live.current.edges.map((e) => (e.id === id ? { ...flowEdge(e.source, e.target, branch), selected: e.selected } : e)));
  }, [change]);

  const run = useCallback(async ({ until, only } = {}) => {
    const { nodes: ns, edges: es } = live.current;
    const sigs = signatures(ns, es, input);
    const target = until || only;
    const cached = {};
    if (target) {
      ancestors(es, target).forEach((id) => {
        if (id !== target && lastRun.current.outputs[id] !== undefined && lastRun.current.sigs[id] === sigs[id]) {
          cached[id] = lastRun.current.outputs[id];
        }
      });
    }
    nodeState.clear(RUN_KEYS);
    setTotals(null);
    setRunError('');
    setRunning(true);
    setTab('run');
    abort.current = new AbortController();
    try {
      await stream('/api/editor/run', { graph: current(), input, cached, until: until || null, only: only || null }, (ev) => {
        if (ev.type === 'node_started') nodeState.patch(ev.node, { status: 'running', text: '' });
        else if (ev.type === 'token') nodeState.patch(ev.node, { text: (nodeState.get(ev.node).text || '') + ev.text });
        else if (ev.type === 'node_finished') {
          const t = ev.trace;
          nodeState.patch(ev.node, { status: t.status, text: t.error || t.output, trace: t, fromCache: Boolean(t.detail?.from_cache) });
          if (t.status === 'ok') {
            lastRun.current.outputs[ev.node] = t.output;
            lastRun.current.sigs[ev.node] = sigs[ev.node];
          }
        } else if (ev.type === 'run_finished') {
          setTotals(ev.result);
          ev.result.nodes.filter((n) => n.status === 'skipped').forEach((n) => nodeState.patch(n.id, { status: 'skipped' }));
        } else if (ev.type === 'error') setRunError(ev.message);
      }, abort.current.signal);
    } catch (e) {
      if (e.name !== 'AbortError') setRunError(e.message);
    }
    setRunning(false);
  }, [current, input]);

  const importFile = async (event) => {
    const file = event.target.files[0];
    event.target.value = '';
    if (!file) return;
    try {
      const workflow = JSON.parse(await file.text());
      if (!Array.isArray(workflow.nodes)) throw new Error('no "nodes" list: not an iollm workflow');
      load(workflow);
    } catch (e) {
      setRunError(`cannot import ${file.name}: ${e.message}`);
    }
  };
  const exportPython = async () => {
    try {
      const source = await api('/api/editor/export/python', { method: 'POST', body: { graph: current() }, text: true });
      download(`${meta.name || 'workflow'}.py`, source, 'text/x-python');
    } catch (e) {
      setRunError(e.message);
    }
  };

  const node = nodes.find((n) => n.id === selected.node);
  const edge = edges.find((e) => e.id === selected.edge);
  return (
    <div className="editor">
      <Palette catalog={catalog} onAdd={addNode} />
      <div className="canvas-column">
        <div className="toolbar">
          <input className="name" aria-label="workflow name" value={meta.name} onChange={(e) => setMeta({ ...meta, name: e.target.value })} />
          <button onClick={undo} disabled={!history.canUndo} title="Ctrl+Z">Undo</button>
          <button onClick={redo} disabled={!history.canRedo} title="Ctrl+Shift+Z">Redo</button>
          <button onClick={autoLayout}>Auto-layout</button>
          <button onClick={() => flow.fitView({ duration: 200 })}>Fit</button>
          <label className="button">Import JSON<input type="file" accept=".json,application/json" hidden onChange={importFile} data-testid="import" /></label>
          <button onClick={() => download(`${meta.name || 'workflow'}.json`, JSON.stringify(current(), null, 2))}>Export JSON</button>
          <button onClick={exportPython}>Export Python</button>
          <button onClick={() => load(STARTER)}>New</button>
          <button className="primary" disabled={running || !nodes.length} onClick={() => run()} data-testid="toolbar-run">Run</button>
        </div>
        {graphProblems.length ? <div className="problems" data-testid="graph-problems">{graphProblems.map((p) => <div key={p}>⚠ {p}</div>)}</div> : null}
        <div className="canvas" ref={wrapper} onDragOver={(e) => e.preventDefault()} onDrop={onDrop} data-testid="canvas">
          <ReactFlow
            nodes={nodes}
            edges={edges}
            nodeTypes={NODE_TYPES}
            onNodesChange={onNodesChange}
            onEdgesChange={onEdgesChange}
            onConnect={onConnect}
            onNodeDragStart={onNodeDragStart}
            onSelectionChange={onSelectionChange}
            deleteKeyCode={['Backspace', 'Delete']}
            minZoom={0.1}
            defaultViewport={{ x: 0, y: 0, zoom: 1 }}
          >
            <Background />
            <Controls />
            <MiniMap pannable zoomable />
          </ReactFlow>
        </div>
      </div>
      <section className="side">
        <nav className="tabs">
          {TABS.map((t) => (
            <button key={t} className={t === tab ? 'active' : ''} onClick={() => setTab(t)} data-testid={`tab-${t}`}>{t}</button>
          ))}
        </nav>
        {tab === 'node' ? (
          <NodePanel node={node} edge={edge} nodes={nodes} edges={edges} models={catalog.models} running={running}
            onConfig={setConfig} onRename={rename} onConnect={onConnect} onRemove={remove} onEdgeBranch={setBranch}
            onRunTo={(id) => run({ until: id })} onRunOnly={(id) => run({ only: id })} />
        ) : null}
        {tab === 'run' ? (
          <RunPanel input={input} setInput={setInput} onRun={() => run()} onStop={() => abort.current?.abort()}
            running={running} totals={totals} error={runError} nodes={nodes} />
        ) : null}
        {tab === 'versions' ? (
          <VersionsPanel name={meta.name} setName={(name) => setMeta({ ...meta, name })} current={current} onLoad={load} user={user} />
        ) : null}
        {tab === 'evaluate' ? <EvaluatePanel suites={catalog.suites} current={current} /> : null}
        {tab === 'search' ? <SearchPanel suites={catalog.suites} current={current} onLoad={load} /> : null}
        {tab === 'publish' ? <PublishPanel name={meta.name} current={current} /> : null}
        {runError && tab !== 'run' ? <div className="error">{runError}</div> : null}
      </section>
    </div>
  );
}

export default function EditorPage(props) {
  return (
    <ReactFlowProvider>
      <Editor {...props} />
    </ReactFlowProvider>
  );
}

