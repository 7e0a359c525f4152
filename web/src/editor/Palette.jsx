import { memo } from 'react';

// Every node kind and role template: click to add at the centre of the view, or drag onto the canvas.
export const DRAG_TYPE = 'application/x-iollm-node';

function Item({ item, label, hint, onAdd, testid }) {
  return (
    <button
      className="palette-item"
      draggable
      data-testid={testid}
      title={hint}
      onClick={() => onAdd(item)}
      onDragStart={(e) => {
        e.dataTransfer.setData(DRAG_TYPE, JSON.stringify(item));
        e.dataTransfer.effectAllowed = 'move';
      }}
    >
      {label}
    </button>
  );
}

function Palette({ catalog, onAdd }) {
  return (
    <aside className="palette" data-testid="palette">
      <h4>Nodes</h4>
      {catalog.kinds.map((k) => (
        <Item key={k.kind} testid={`add-${k.kind}`} label={k.kind} hint={k.help}
          item={{ kind: k.kind, config: k.config, base: k.kind === 'output' ? 'out' : k.kind }} onAdd={onAdd} />
      ))}
      <h4>Roles</h4>
      {catalog.roles.map((r) => (
        <Item key={r.role} testid={`add-role-${r.role}`} label={r.role} hint={r.prompt}
          item={{ kind: 'model', config: r.config, base: r.role }} onAdd={onAdd} />
      ))}
    </aside>
  );
}

export default memo(Palette);
