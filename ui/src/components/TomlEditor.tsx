//! A job spec editor: a textarea with line numbers, the line an error names marked, and the
//! message shown under it.

import { useRef } from 'preact/hooks';

/** The line a message names (`... at line 3, column 9`), if it names one. */
export function errorLine(message: string | undefined): number | undefined {
  const m = message?.match(/line (\d+)/);
  return m ? Number(m[1]) : undefined;
}

export function TomlEditor({
  value,
  onChange,
  error,
}: {
  value: string;
  onChange: (v: string) => void;
  error?: string;
}) {
  const gutter = useRef<HTMLDivElement>(null);
  const bad = errorLine(error);
  const lines = Math.max(value.split('\n').length, 12);
  return (
    <div class="editor-wrap">
      <div class="editor">
        <div class="gutter" ref={gutter} aria-hidden="true">
          {Array.from({ length: lines }, (_, i) => (
            <div key={i} class={i + 1 === bad ? 'bad-line' : undefined}>
              {i + 1}
            </div>
          ))}
        </div>
        <textarea
          spellcheck={false}
          aria-label="Job spec (TOML)"
          data-testid="spec-editor"
          value={value}
          rows={lines}
          onInput={(e) => onChange((e.target as HTMLTextAreaElement).value)}
          onScroll={(e) => {
            if (gutter.current) gutter.current.scrollTop = (e.target as HTMLTextAreaElement).scrollTop;
          }}
        />
      </div>
      {error && (
        <div class="error" role="alert" data-testid="submit-error">
          {bad !== undefined && <strong>Line {bad}: </strong>}
          {error}
        </div>
      )}
    </div>
  );
}
