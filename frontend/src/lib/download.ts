// The browser's own download of a URL that needs no Authorization header (a signed, short-lived
// download link from the API): streamed to disk with the browser's progress, whatever the size,
// and saved under the name the server gives.

export function startDownload(url: string): void {
  const a = document.createElement("a");
  a.href = url;
  a.download = ""; // the server's file name (Content-Disposition)
  document.body.appendChild(a);
  a.click();
  a.remove();
}
