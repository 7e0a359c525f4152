// Undo/redo over snapshots of the graph (nodes without selection state, and edges).
import { useCallback, useRef, useState } from 'react';

const LIMIT = 200;

function strip(nodes) {
  return nodes.map(({ id, type, position, data }) => ({ id, type, position, data }));
}

export function useHistory() {
  const past = useRef([]);
  const future = useRef([]);
  const [, bump] = useState(0);

  const record = useCallback((nodes, edges) => {
    past.current.push({ nodes: strip(nodes), edges });
    if (past.current.length > LIMIT) past.current.shift();
    future.current = [];
    bump((x) => x + 1);
  }, []);

  const undo = useCallback((nodes, edges) => {
    const last = past.current.pop();
    if (!last) return null;
    future.current.push({ nodes: strip(nodes), edges });
    bump((x) => x + 1);
    return last;
  }, []);

  const redo = useCallback((nodes, edges) => {
    const next = future.current.pop();
    if (!next) return null;
    past.current.push({ nodes: strip(nodes), edges });
    bump((x) => x + 1);
    return next;
  }, []);

  return { record, undo, redo, canUndo: past.current.length > 0, canRedo: future.current.length > 0 };
}
