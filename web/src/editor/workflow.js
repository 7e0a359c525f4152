// Workflow JSON (schema iollm.workflow/1, see src/iollm/paths/graph.py) <-> React Flow nodes and edges.
// Layout lives in each node's `position`, which the graph hash ignores, so moving nodes changes nothing.

import dagre from '@dagrejs/dagre';

export const SCHEMA = 'iollm.workflow/1';
export const NODE_WIDTH = 220;
export const NODE_HEIGHT = 96;

export function edgeId(source, target) {
  return `${source}->${target}`;
}

export function toFlow(workflow) {
  const nodes = (workflow.nodes || []).map((raw, index) => {
    const { id, kind, position, ...config } = raw;
    return {
      id: String(id),
      type: 'wf',
      position: position && Number.isFinite(position.x) ? { x: position.x, y: position.y } : { x: 0, y: index * 120 },
      data: { kind, config },
    };
  });
  const edges = (workflow.edges || []).map((raw) => flowEdge(raw.from ?? raw.source, raw.to ?? raw.target, raw.branch));
  const placed = (workflow.nodes || []).every((n) => n.position);
  return { nodes: placed ? nodes : layout(nodes, edges), edges };
}

export function flowEdge(source, target, branch) {
  return {
    id: edgeId(source, target),
    source,
    target,
    label: branch || undefined,
    data: { branch: branch || '' },
  };
}

export function toWorkflow(nodes, edges, meta) {
  return {
    schema: SCHEMA,
    name: meta.name || 'workflow',
    description: meta.description || '',
    nodes: nodes.map((n) => ({
      id: n.id,
      kind: n.data.kind,
      ...n.data.config,
      position: { x: Math.round(n.position.x), y: Math.round(n.position.y) },
    })),
    edges: edges.map((e) => ({ from: e.source, to: e.target, ...(e.data?.branch ? { branch: e.data.branch } : {}) })),
  };
}

// Left-to-right layered layout (dagre); node sizes are fixed so it needs no measuring pass.
export function layout(nodes, edges) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'LR', nodesep: 30, ranksep: 70 });
  g.setDefaultEdgeLabel(() => ({}));
  nodes.forEach((n) => g.setNode(n.id, { width: NODE_WIDTH, height: NODE_HEIGHT }));
  edges.forEach((e) => g.setEdge(e.source, e.target));
  dagre.layout(g);
  return nodes.map((n) => {
    const p = g.node(n.id);
    return { ...n, position: { x: p.x - NODE_WIDTH / 2, y: p.y - NODE_HEIGHT / 2 } };
  });
}

export function nextId(nodes, base) {
  const taken = new Set(nodes.map((n) => n.id));
  const stem = base.replace(/[^A-Za-z0-9_-]/g, '_');
  if (stem === 'out' && !taken.has('out')) return 'out';
  for (let i = 1; ; i += 1) if (!taken.has(`${stem}${i}`)) return `${stem}${i}`;
}

// What a node's output depends on: its config, the input and its upstream nodes' signatures. A cached
// output is reused only while its signature is unchanged (edit a node: it and its descendants rerun).
export function signatures(nodes, edges, input) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const upstream = new Map(nodes.map((n) => [n.id, []]));
  edges.forEach((e) => upstream.get(e.target)?.push(e.source));
  const memo = new Map();
  const visiting = new Set();
  const sig = (id) => {
    if (memo.has(id)) return memo.get(id);
    if (visiting.has(id)) return 'cycle';
    visiting.add(id);
    const n = byId.get(id);
    const ups = (upstream.get(id) || []).slice().sort().map((u) => `${u}:${sig(u)}`);
    const value = JSON.stringify([n?.data.kind, n?.data.config, ups, input]);
    visiting.delete(id);
    memo.set(id, value);
    return value;
  };
  const out = {};
  nodes.forEach((n) => {
    out[n.id] = sig(n.id);
  });
  return out;
}

export function ancestors(edges, id) {
  const found = new Set([id]);
  const todo = [id];
  while (todo.length) {
    const current = todo.pop();
    edges.forEach((e) => {
      if (e.target === current && !found.has(e.source)) {
        found.add(e.source);
        todo.push(e.source);
      }
    });
  }
  return found;
}

export function renameNode(nodes, edges, from, to) {
  return {
    nodes: nodes.map((n) => (n.id === from ? { ...n, id: to } : n)),
    edges: edges.map((e) => {
      const source = e.source === from ? to : e.source;
      const target = e.target === from ? to : e.target;
      return { ...e, id: edgeId(source, target), source, target };
    }),
  };
}

export const STARTER = {
  schema: SCHEMA,
  name: 'my-workflow',
  description: '',
  nodes: [],
  edges: [],
};
