// How API errors are presented: a form shows an error next to the input its `param` names (the
// API reports every field by its request name; which input holds which field is the form's own
// knowledge, e.g. `inputForParam` in jobform.ts), and anything else above the submit button.

import { ApiError } from "../api";

export interface FormErrors<Input extends string = string> {
  fields: Partial<Record<Input, string>>;
  /** errors that belong to no input of the form */
  general: string | null;
}

/** `error` placed by `inputFor`; `rephrase` turns an API message into the form's words. */
export function formErrors<Input extends string>(
  error: unknown,
  inputFor: (param: string | null) => Input | null,
  rephrase: (message: string) => string = (m) => m,
): FormErrors<Input> {
  if (error instanceof ApiError) {
    const input = inputFor(error.param);
    if (!input) return { fields: {}, general: rephrase(error.message) };
    const fields: Partial<Record<Input, string>> = {};
    fields[input] = rephrase(error.message);
    return { fields, general: null };
  }
  return { fields: {}, general: error instanceof Error ? error.message : String(error) };
}

/** One bad line of an uploaded file, as the file's `status_details` names it. */
export interface BadLine {
  line: number;
  reason: string;
}

/** The bad lines a file validation error lists ("2 bad lines: line 3: ...; line 9: ...; and 4
 * more", or a lone "line 3: ..."): `count` in all, the first few named. Null for a whole-file
 * problem ("file is empty"). */
export function badLines(
  details: string | null | undefined,
): { count: number; lines: BadLine[]; more: number } | null {
  const text = details ?? "";
  const single = /^line (\d+): ([\s\S]*)$/.exec(text);
  if (single) return { count: 1, lines: [{ line: Number(single[1]), reason: single[2] }], more: 0 };
  const header = /^(\d+) bad lines?: ([\s\S]*)$/.exec(text);
  if (!header) return null;
  let body = header[2];
  let more = 0;
  const tail = /; and (\d+) more$/.exec(body);
  if (tail) {
    more = Number(tail[1]);
    body = body.slice(0, tail.index);
  }
  // reasons may hold "; " themselves, so split only where the next "line N: " starts
  const lines = body.split(/; (?=line \d+: )/).flatMap((part) => {
    const m = /^line (\d+): ([\s\S]*)$/.exec(part);
    return m ? [{ line: Number(m[1]), reason: m[2] }] : [];
  });
  return { count: Number(header[1]), lines, more };
}
