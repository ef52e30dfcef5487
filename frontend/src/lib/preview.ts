// A file's first rows for the Files page's preview: the start of its content, cut to whole lines,
// each JSON line shown by its fields (long values shortened). Parquet and other binary files have
// no text to show.

export interface PreviewRow {
  line: number;
  /** field -> value, for a JSON object line */
  fields: [string, string][] | null;
  /** the raw text, for any other line */
  text: string | null;
}

const shorten = (s: string, max: number) => (s.length > max ? `${s.slice(0, max)}…` : s);

/** The first `rows` complete lines of `head` (the start of a file), or null if it is binary. */
export function previewRows(head: Uint8Array, rows = 5, maxChars = 240): PreviewRow[] | null {
  if (head.length >= 4 && String.fromCharCode(...head.subarray(0, 4)) === "PAR1") return null;
  if (head.includes(0)) return null;
  const text = new TextDecoder("utf-8", { fatal: false }).decode(head);
  const lines = text.split("\n");
  if (lines.length > 1) lines.pop(); // the last piece may be cut mid-line
  const out: PreviewRow[] = [];
  for (let i = 0; i < lines.length && out.length < rows; i++) {
    const raw = lines[i].replace(/\r$/, "");
    if (!raw.trim()) continue;
    let fields: [string, string][] | null = null;
    try {
      const obj = JSON.parse(raw);
      if (obj && typeof obj === "object" && !Array.isArray(obj))
        fields = Object.entries(obj).map(([k, v]) => [
          k,
          shorten(typeof v === "string" ? v : JSON.stringify(v), maxChars),
        ]);
    } catch {
      // not JSON: shown as text
    }
    out.push({ line: i + 1, fields, text: fields ? null : shorten(raw, maxChars) });
  }
  return out;
}
