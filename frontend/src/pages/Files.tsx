// Files: drag-and-drop (or pick) upload with a progress bar, the validation result of each file
// (format, examples, tokens, or the error with its line number), a preview of its first rows, and
// delete.

import { Fragment, useRef, useState, type DragEvent } from "react";
import type { FileObject } from "../api";
import { useClient, useOnError } from "../auth";
import { Empty, ErrorNote, Loading, ProgressBar } from "../components/ui";
import { usePolled } from "../hooks";
import { startDownload } from "../lib/download";
import { badLines } from "../lib/errors";
import { formatBytes, formatCount, formatTime } from "../lib/format";
import { previewRows, type PreviewRow } from "../lib/preview";

interface Upload {
  id: number;
  name: string;
  progress: number;
  error: string | null;
}

export function FilesPage() {
  const client = useClient();
  const onError = useOnError();
  const [purpose, setPurpose] = useState("fine-tune");
  const [uploads, setUploads] = useState<Upload[]>([]);
  const [dragging, setDragging] = useState(false);
  const [actionError, setActionError] = useState<string | null>(null);
  // file id -> its first rows (null: binary, nothing to show); absent while not opened
  const [previews, setPreviews] = useState<Record<string, PreviewRow[] | null | "loading">>({});
  const picker = useRef<HTMLInputElement>(null);
  const nextUpload = useRef(0);
  // poll while a file is still being validated
  const files = usePolled(
    () => client.files(),
    [client],
    (list) => (list?.data.some((f) => f.status === "uploaded") ? 1500 : null),
  );

  async function send(selected: FileList | File[]) {
    for (const file of Array.from(selected)) {
      const id = nextUpload.current++;
      const update = (patch: Partial<Upload>) =>
        setUploads((all) => all.map((u) => (u.id === id ? { ...u, ...patch } : u)));
      setUploads((all) => [...all, { id, name: file.name, progress: 0, error: null }]);
      try {
        await client.upload(file, purpose, (progress) => update({ progress }));
        setUploads((all) => all.filter((u) => u.id !== id));
        files.reload();
      } catch (e) {
        update({ error: onError(e) });
      }
    }
  }

  function onDrop(e: DragEvent) {
    e.preventDefault();
    setDragging(false);
    if (e.dataTransfer.files.length) send(e.dataTransfer.files);
  }

  async function togglePreview(file: FileObject) {
    if (file.id in previews) {
      setPreviews(({ [file.id]: _, ...rest }) => rest);
      return;
    }
    setPreviews((p) => ({ ...p, [file.id]: "loading" }));
    try {
      const rows = previewRows(await client.fileHead(file.id));
      setPreviews((p) => ({ ...p, [file.id]: rows }));
    } catch (e) {
      setActionError(onError(e));
      setPreviews(({ [file.id]: _, ...rest }) => rest);
    }
  }

  async function download(file: FileObject) {
    try {
      startDownload((await client.fileLink(file.id)).url);
      setActionError(null);
    } catch (e) {
      setActionError(onError(e));
    }
  }

  async function remove(file: FileObject) {
    if (!window.confirm(`Delete ${file.filename} (${file.id})?`)) return;
    try {
      await client.deleteFile(file.id);
      setActionError(null);
      files.reload();
    } catch (e) {
      setActionError(onError(e));
    }
  }

  return (
    <section>
      <h1>Files</h1>
      <div
        className={`dropzone${dragging ? " dragging" : ""}`}
        onDragOver={(e) => {
          e.preventDefault();
          setDragging(true);
        }}
        onDragLeave={() => setDragging(false)}
        onDrop={onDrop}
        data-testid="dropzone"
      >
        <p>
          Drop JSONL, .txt or Parquet files here, or{" "}
          <button type="button" className="link-button" onClick={() => picker.current?.click()}>
            choose files
          </button>
          .
        </p>
        <label>
          Purpose{" "}
          <select value={purpose} onChange={(e) => setPurpose(e.target.value)} aria-label="Purpose">
            <option value="fine-tune">fine-tune (target or validation data)</option>
            <option value="replay">replay (generic data)</option>
            <option value="evals">evals (task evals of jobs)</option>
          </select>
        </label>
        <input
          ref={picker}
          type="file"
          multiple
          hidden
          data-testid="file-input"
          onChange={(e) => {
            if (e.target.files?.length) send(e.target.files);
            e.target.value = "";
          }}
        />
        {uploads.map((u) => (
          <div key={u.id} className="upload-row">
            <span>{u.name}</span>
            {u.error ? (
              <span className="field-error">{u.error}</span>
            ) : (
              <ProgressBar value={u.progress} label={`Uploading ${u.name}`} />
            )}
          </div>
        ))}
      </div>
      {actionError && <ErrorNote message={actionError} />}
      {files.loading && !files.data && <Loading what="files" />}
      {files.error && <ErrorNote message={files.error} onRetry={files.reload} />}
      {files.data && files.data.data.length === 0 && (
        <Empty>No files yet. Upload target data (purpose fine-tune) and, for replay, generic data.</Empty>
      )}
      {files.data && files.data.data.length > 0 && (
        <table className="table" aria-label="Files">
          <thead>
            <tr>
              <th>File</th>
              <th>Purpose</th>
              <th>Status</th>
              <th>Format</th>
              <th className="num">Examples</th>
              <th className="num">Tokens</th>
              <th className="num">Size</th>
              <th>Uploaded</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {files.data.data.map((f) => (
              <Fragment key={f.id}>
                <tr data-file-id={f.id}>
                  <td>
                    <div>{f.filename}</div>
                    <div className="muted small mono">{f.id}</div>
                  </td>
                  <td>{f.purpose}</td>
                  <td>
                    <span className={`badge badge-file-${f.status}`}>
                      {f.status === "uploaded" ? "validating…" : f.status}
                    </span>
                    {f.status === "error" && <FileError details={f.status_details} />}
                  </td>
                  <td>{f.stats?.format ?? "—"}</td>
                  <td className="num">{formatCount(f.stats?.examples)}</td>
                  <td className="num">{formatCount(f.stats?.tokens)}</td>
                  <td className="num">{formatBytes(f.bytes)}</td>
                  <td>{formatTime(f.created_at)}</td>
                  <td className="nowrap">
                    <button type="button" className="small" onClick={() => togglePreview(f)}
                      aria-expanded={f.id in previews} aria-label={`Preview ${f.filename}`}>
                      {f.id in previews ? "Hide" : "Preview"}
                    </button>{" "}
                    <button type="button" className="small" onClick={() => download(f)} aria-label={`Download ${f.filename}`}>
                      Download
                    </button>{" "}
                    <button type="button" className="danger small" onClick={() => remove(f)} aria-label={`Delete ${f.filename}`}>
                      Delete
                    </button>
                  </td>
                </tr>
                {f.id in previews && (
                  <tr className="preview-row">
                    <td colSpan={9}>
                      <FilePreview rows={previews[f.id]} file={f} />
                    </td>
                  </tr>
                )}
              </Fragment>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

/** Why validation refused a file: every bad line it names (all of them were checked), or the
 * whole-file problem. */
function FileError({ details }: { details?: string | null }) {
  const bad = badLines(details);
  if (!bad) return <div className="field-error small">{details}</div>;
  return (
    <div className="field-error small">
      {bad.count > 1 && <div>{formatCount(bad.count)} bad lines</div>}
      <ul className="bad-lines">
        {bad.lines.map((l) => (
          <li key={l.line}>
            <strong>Line {l.line}:</strong> {l.reason}
          </li>
        ))}
      </ul>
      {bad.more > 0 && <div>and {formatCount(bad.more)} more</div>}
    </div>
  );
}

/** The first rows of a file, each JSON line by its fields. */
function FilePreview({ rows, file }: { rows: PreviewRow[] | null | "loading"; file: FileObject }) {
  if (rows === "loading") return <span className="muted small">Reading the first rows…</span>;
  if (rows === null) return <span className="muted small">A binary file (Parquet): no text to preview.</span>;
  return (
    <div data-testid={`preview-${file.id}`}>
      <p className="muted small">
        First {rows.length} rows of {formatCount(file.stats?.examples)} · {file.stats?.format ?? "unknown format"} ·{" "}
        {formatCount(file.stats?.tokens)} tokens · {formatBytes(file.bytes)}
      </p>
      <ol className="preview">
        {rows.map((r) => (
          <li key={r.line} value={r.line}>
            {r.fields
              ? r.fields.map(([k, v]) => (
                  <div key={k}>
                    <span className="muted">{k}:</span> {v}
                  </div>
                ))
              : r.text}
          </li>
        ))}
      </ol>
    </div>
  );
}
