"""Open a Snakemake report in headless Chromium and say what a reader would find in it.

A copy of the report gets a script that walks the report's own app: it opens every category
(what clicking it in the menu does) and keeps the rendered text, shows every image result in the
app's image view and waits until the browser has decoded it, and parses every HTML result
(tables). The findings come back as JSON in the dumped DOM.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]

HARNESS = r"""
<script>
const pause = (ms) => new Promise((done) => setTimeout(done, ms));
async function matsamCheck() {
  const found = {start: document.body.innerText, categories: {}, results: []};
  try { await walk(found); } catch (error) { found.error = String(error) + " " + error.stack; }
  const pre = document.createElement("pre");
  pre.id = "matsam-check";
  pre.textContent = JSON.stringify(found);
  document.body.appendChild(pre);
}
async function walk(found) {
  for (const category of Object.keys(categories)) {
    app.showCategory(category);
    await pause(300);
    found.categories[category] = {text: document.body.innerText, subcategories: Object.keys(categories[category])};
  }
  for (const [path, result] of Object.entries(results)) {
    const item = {path: path, mime: result.mime_type, caption: result.caption || ""};
    if (result.mime_type.startsWith("image/")) {
      app.setView({content: "img", contentPath: result.data_uri, resultPath: path});
      await pause(200);
      const img = Array.from(document.querySelectorAll("img")).find((i) => i.src === result.data_uri);
      if (img) {
        await Promise.race([img.decode().catch(() => null), pause(3000)]);
        item.width = img.naturalWidth;
        item.height = img.naturalHeight;
      }
    } else if (result.mime_type === "text/html") {
      const bytes = Uint8Array.from(atob(result.data_uri.split(",")[1]), (c) => c.charCodeAt(0));
      const text = new TextDecoder().decode(bytes);
      const doc = new DOMParser().parseFromString(text, "text/html");
      item.text = doc.body.innerText || doc.body.textContent;
      item.tables = doc.querySelectorAll("table").length;
      item.headers = Array.from(doc.querySelectorAll("th")).map((th) => th.textContent);
    }
    found.results.push(item);
  }
}
window.addEventListener("load", () => setTimeout(matsamCheck, 500));
</script>
"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def inspect_report(report: Path, work: Path, timeout: int = 180) -> dict:
    """Render `report` in headless Chromium; the harness's findings (see module doc)."""
    page = work / "report_checked.html"
    head, tag, tail = report.read_text().rpartition("</body>")
    page.write_text(head + HARNESS + tag + tail)
    result = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={work / 'chromium-profile'}",
         "--virtual-time-budget=60000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=timeout)
    match = re.search(r'<pre id="matsam-check">(.*?)</pre>', result.stdout, re.S)
    if match is None:
        raise AssertionError(f"the report did not finish rendering: {result.stderr[-2000:]}")
    import html

    return json.loads(html.unescape(match.group(1)))


def screenshot(report: Path, png: Path, work: Path, category: str, subcategory: str, result: str | None = None,
               size: str = "1400,900", timeout: int = 180) -> None:
    """A PNG of the report as a reader sees it with a subcategory open (and `result` shown)."""
    where = json.dumps({"navbarMode": "subcategory", "category": category, "subcategory": subcategory})
    show = f"setTimeout(() => app.setView({where}), 300);"
    if result is not None:  # the image view first: showCategory's menu state must not be overwritten
        show += (f"const r = results[{json.dumps(result)}];"
                 f"app.setView({{content: 'img', contentPath: r.data_uri, resultPath: {json.dumps(result)}}});")
    head, tag, tail = report.read_text().rpartition("</body>")
    page = work / "report_shown.html"
    page.write_text(head + f"<script>window.addEventListener('load', () => setTimeout(() => {{{show}}}, 300));"
                    "</script>" + tag + tail)
    subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={work / 'chromium-shot'}", "--hide-scrollbars",
                    "--virtual-time-budget=20000", f"--window-size={size}", f"--screenshot={png}", page.as_uri()],
                   capture_output=True, timeout=timeout, check=True)
