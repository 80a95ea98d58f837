"""The run report as one HTML page: per photo the input and the output side by side (hover the output to see the
input in its place), the critic's analysis, suggestions and score before/after, the executed parameters, the
attributes before/after, what was not executed, and the run's failures with their reasons.

The page renders the JSON report as ``batch_command.run_files`` builds it (``BatchResult.to_json`` records, each
``EnhanceRecord.to_json`` plus input, output and size) and needs nothing else to open: the thumbnails are JPEGs
embedded as data URIs, the style is inline, a few lines of plain script show the input in the output's place
while the pointer is over it, and nothing is fetched. Thumbnails are small (``thumbnails.THUMBNAIL_SIDE`` px on
the long side) and rows off screen are not laid out (``content-visibility``), so a run over hundreds of photos
opens fast; each thumbnail links to its full-size file. Every text is escaped.
"""

from __future__ import annotations

import json
import os
from html import escape
from pathlib import Path
from urllib.request import pathname2url

from spc_fast import imagefiles, thumbnails
from spc_fast.thumbnails import THUMBNAIL_SIDE

_PARAMETER_FORMATS = {
    "exposure": "{:+.2f} EV",
    "contrast": "×{:.2f}",
    "saturation": "×{:.2f}",
    "temperature": "{:+.0f} mired",
}
_NEUTRAL = {"exposure": 0.0, "contrast": 1.0, "saturation": 1.0, "temperature": 0.0}
_ATTRIBUTES = {
    "exposure": ("exposure", "mean L*", 1),
    "contrast": ("contrast", "std L*", 1),
    "saturation": ("saturation", "mean C*", 1),
    "cct": ("CCT", "K", 0),
}

_STYLE = """
:root{--ink:#1d232b;--muted:#5d6875;--line:#dde2e8;--card:#fff;--back:#f3f5f8;--good:#1f7a3d;--bad:#b3261e;
--accent:#2457c5;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink)}
body{margin:0;background:var(--back)}
header,main,section.run{max-width:1180px;margin:0 auto;padding:0 20px}
header{padding-top:22px}h1{font-size:22px;margin:0 0 4px}
.meta{color:var(--muted);margin:0 0 14px}.meta b{color:var(--ink)}
.notice{background:#fff4e5;border:1px solid #f0c27b;border-radius:8px;padding:10px 14px;margin:0 0 14px}
section.run h2{font-size:17px;margin:18px 0 8px}
.failures{border-color:#f1b8b3;background:#fdf0ef}.failures td:last-child{color:var(--bad)}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:3px 8px 3px 0;vertical-align:top}
td:first-child{white-space:nowrap}table.index{width:auto}table.index td,table.index th{padding-right:28px}
th{font-weight:600;color:var(--muted);font-size:13px}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
article{background:var(--card);border:1px solid var(--line);border-radius:10px;margin:18px 0;padding:16px 18px;
content-visibility:auto;contain-intrinsic-size:auto 900px}
article h2{font-size:16px;margin:0 0 12px;word-break:break-all}article h2 .size{color:var(--muted);font-weight:400}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:12px}
figure{margin:0}figure img{display:block;width:100%;height:auto;max-height:560px;object-fit:contain;
border-radius:6px;background:#e8ebef}
figcaption{color:var(--muted);font-size:13px;margin-top:4px}figcaption b{color:var(--ink)}
.facts{display:grid;grid-template-columns:minmax(0,1.5fr) minmax(0,1fr) minmax(0,1.1fr);gap:10px 26px;
margin-top:14px}@media (max-width:900px){.facts,.pair{grid-template-columns:minmax(0,1fr)}}
.facts h3{font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);margin:6px 0 4px}
.score{font-size:20px;font-weight:650}.score .up{color:var(--good)}.score .down{color:var(--bad)}
ul{margin:0;padding-left:18px}li.skip{color:var(--muted)}.tag{font-size:12px;border-radius:4px;padding:0 5px;
margin-left:6px;background:#eef0f3;color:var(--muted)}.changed{font-weight:600}
.reasoning{margin:0;white-space:pre-wrap}pre{white-space:pre-wrap;font-size:12.5px;background:#f6f7f9;
border-radius:6px;padding:8px;margin:6px 0 0;max-height:340px;overflow:auto}
details summary{cursor:pointer;color:var(--accent)}.warn{color:var(--bad)}
"""


_SCRIPT = """
for (const pair of document.querySelectorAll(".pair")) {
  const before = pair.querySelector("img.before"), after = pair.querySelector("img.after");
  if (!before || !after) continue;
  const edited = after.src;
  after.addEventListener("pointerenter", () => { after.src = before.src; });
  after.addEventListener("pointerleave", () => { after.src = edited; });
}
"""


def _text(value: object) -> str:
    """Text for an element's content: ``<``, ``>`` and ``&`` escaped (quotes need no escaping there)."""
    return escape(str(value), quote=False)


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _link(path: str, folder: Path) -> str:
    """A relative URL from the report's folder to ``path`` (the run's paths are relative to the working folder)."""
    try:
        return pathname2url(os.path.relpath(Path(path).absolute(), folder))
    except ValueError:  # another drive on Windows
        return Path(path).absolute().as_uri()


def _image(path: str, role: str, folder: Path, side: int) -> str:
    thumb = thumbnails.data_uri(path, side)
    if thumb is None:
        return f'<p class="warn">the {role} image {_text(path)} cannot be read for a thumbnail</p>'
    uri, (width, height) = thumb
    img = (
        f'<img class="{role}" src="{uri}" width="{width}" height="{height}" alt="{role}: '
        f'{_attr(Path(path).name)}" decoding="async">'
    )
    return f'<a href="{_attr(_link(path, folder))}" title="{_attr(path)}">{img}</a>'


def _shown_score(value: object) -> str:
    # a neural critic may answer without a parseable score
    return "?" if not isinstance(value, (int, float)) or value != value else f"{value:.0f}"


def _scores(before: object, after: object) -> str:
    """The score, or the score before → after coloured by the way it went."""
    first, second = _shown_score(before), _shown_score(after)
    if after is None:
        return first
    trend = "" if "?" in (first, second) or first == second else "up" if after > before else "down"
    return f'{first} → <span class="{trend}">{second}</span>'


def _parameters(parameters: dict[str, float]) -> str:
    rows = []
    for name, value in parameters.items():
        shown = _PARAMETER_FORMATS.get(name, "{}").format(value)
        changed = ' class="changed"' if value != _NEUTRAL.get(name, value) else ""
        rows.append(f"<tr{changed}><td>{_text(name)}</td><td class=num>{_text(shown)}</td></tr>")
    return f"<table>{''.join(rows)}</table>" if rows else "<p>none</p>"


def _attributes(before: dict[str, float], after: dict[str, float]) -> str:
    rows = ["<tr><th></th><th class=num>before</th><th class=num>after</th><th class=num>change</th></tr>"]
    for key, value in before.items():
        title, unit, digits = _ATTRIBUTES.get(key, (key, "", 2))
        new = after.get(key, value)
        change = round(new - value, digits) + 0.0  # + 0.0: no "-0.0" for a change that rounds away
        rows.append(
            f"<tr><td>{_text(title)} <span class=tag>{_text(unit)}</span></td><td class=num>{value:.{digits}f}"
            f"</td><td class=num>{new:.{digits}f}</td><td class=num>{change:+.{digits}f}</td></tr>"
        )
    return f"<table>{''.join(rows)}</table>"


def _suggestions(suggestions: list[str], not_executed: list[str]) -> str:
    if not suggestions:
        return "<p>no edit needed</p>"
    items = [
        f'<li class="skip">{_text(s)}<span class=tag>not executed</span></li>'
        if s in not_executed
        else f"<li>{_text(s)}</li>"
        for s in suggestions
    ]
    return f"<ul>{''.join(items)}</ul>"


def _analysis(record: dict, scored: bool) -> str:
    """The critic's score, reasoning and full answer (edit mode: the instruction), and what went wrong with it."""
    critique = record.get("critique", {})
    out = ""
    if scored:
        out = f"<h3>critic's score</h3><p class=score>{_scores(critique.get('score'), record.get('score_after'))}</p>"
        if record.get("score_after") is None:
            out += '<p class="meta">the score after needs --rescore</p>'
    reasoning = critique.get("reasoning") or ""
    out += f"<h3>{'analysis' if scored else 'instruction'}</h3>"
    out += f'<p class="reasoning">{_text(reasoning)}</p>' if reasoning else ""
    answer = record.get("critic_text")
    if answer:
        label = "the critic's full answer" if scored else "as given"
        out += f"<details{'' if reasoning else ' open'}><summary>{label}</summary><pre>{_text(answer)}</pre></details>"
    if record.get("truncated"):
        out += '<p class="warn">the critic\'s answer hit the token limit and was cut off</p>'
    return out + "".join(f'<p class="warn">critic answer: {_text(error)}</p>' for error in critique.get("errors", []))


def _edit(record: dict) -> str:
    """Suggestions (those not executed marked), conflicts, the executed parameters and how the edit reached the
    input size."""
    critique = record.get("critique", {})
    out = f"<h3>suggestions</h3>{_suggestions(critique.get('suggestions', []), record.get('not_executed', []))}"
    conflicts = "".join(f"<li>{_text(c)}</li>" for c in record.get("conflicts", []))
    out += f"<h3>conflicting suggestions</h3><ul>{conflicts}</ul>" if conflicts else ""
    out += f"<h3>executed parameters</h3>{_parameters(record.get('parameters', {}))}"
    if record.get("full_res", "none") != "none":
        out += f'<p class="meta">brought to the input size by {_text(record["full_res"])}</p>'
    return out


def _photo(index: int, record: dict, folder: Path, side: int, scored: bool) -> str:
    critique = record.get("critique", {})
    before_caption, after_caption = "before", "after"
    if scored:
        before_caption += f" · score <b>{_shown_score(critique.get('score'))}</b>"
        if record.get("score_after") is not None:
            after_caption += f" · score <b>{_shown_score(record['score_after'])}</b>"
    rewards = "".join(
        f"<tr><td>{_text(k)}</td><td class=num>{v:.3f}</td></tr>" for k, v in record.get("rewards", {}).items()
    )
    attributes = _attributes(record.get("attributes_before", {}), record.get("attributes_after", {}))
    size = f"{record.get('width', '?')}×{record.get('height', '?')}"
    return f"""<article id="photo-{index}">
<h2>{_text(record["input"])} → {_text(record["output"])} <span class="size">{size}</span></h2>
<div class="pair"><figure>{_image(record["input"], "before", folder, side)}<figcaption>{before_caption}</figcaption>
</figure><figure>{_image(record["output"], "after", folder, side)}<figcaption>{after_caption} <span class=tag>hover \
to see before</span></figcaption></figure></div>
<div class="facts"><div>{_analysis(record, scored)}</div><div>{_edit(record)}</div>
<div><h3>attributes</h3>{attributes}{f"<h3>rewards</h3><table>{rewards}</table>" if rewards else ""}</div></div>
</article>"""


def _index(images: list[dict], scored: bool) -> str:
    """A table of every photo linking to its row: the way around a run over many photos."""
    rows = []
    for i, record in enumerate(images, 1):
        critique = record.get("critique", {})
        score = _scores(critique.get("score"), record.get("score_after"))
        edits = len(critique.get("suggestions", []))
        skipped = len(record.get("not_executed", []))
        rows.append(
            f'<tr><td class=num>{i}</td><td><a href="#photo-{i}">{_text(record["input"])}</a></td>'
            + (f"<td class=num>{score}</td>" if scored else "")
            + f"<td class=num>{edits}</td><td class=num>{skipped}</td></tr>"
        )
    head = "<th class=num>score</th>" if scored else ""
    return (
        f'<section class="run"><details{" open" if len(images) <= 30 else ""}><summary>{len(images)} photos'
        f"</summary><table class=index><tr><th class=num>#</th><th>input</th>{head}<th class=num>edits</th>"
        f"<th class=num>not executed</th></tr>{''.join(rows)}</table></details></section>"
    )


def _run_sections(report: dict) -> str:
    parts = []
    failures = report.get("failures", [])
    if failures:
        rows = "".join(f"<tr><td>{_text(f['input'])}</td><td>{_text(f['error'])}</td></tr>" for f in failures)
        parts.append(
            f'<section class="run"><h2>{len(failures)} failed</h2><div class="notice failures">'
            f"<table><tr><th>input</th><th>reason</th></tr>{rows}</table></div></section>"
        )
    for key, title in (("skipped", "skipped"), ("not_started", "not started")):
        entries = report.get(key, [])
        if entries:
            items = "".join(
                f"<li>{_text(e['path'])}: {_text(e['reason'])}</li>" if isinstance(e, dict) else f"<li>{_text(e)}</li>"
                for e in entries
            )
            parts.append(
                f'<section class="run"><details><summary>{len(entries)} {title}</summary><ul>{items}</ul>'
                "</details></section>"
            )
    return "\n".join(parts)


def render(report: dict, folder: str | os.PathLike = ".", *, side: int = THUMBNAIL_SIDE) -> str:
    """The page for ``report`` (the JSON report's content); links and image paths are resolved from ``folder``,
    where the page will be written."""
    folder = Path(folder).absolute()
    images = report.get("images", [])
    scored = "instruction" not in report
    counts = f"<b>{len(images)}</b> written · <b>{len(report.get('failures', []))}</b> failed"
    parts = f"critic <b>{_text(report.get('critic', '?'))}</b> · artist <b>{_text(report.get('artist', '?'))}</b>"
    header = [f'<p class="meta">{counts} · {parts} · spc-fast {_text(report.get("version", "?"))}</p>']
    if not scored:
        header.append(f'<p class="notice">instruction: {_text(report["instruction"])}</p>')
    if report.get("interrupted"):
        header.append(
            f'<p class="notice">interrupted by {_text(report["interrupted"])}: run the same command with '
            "--skip-existing to finish</p>"
        )
    config = json.dumps(report.get("config", {}), indent=2, default=str)
    photos = "\n".join(_photo(i + 1, record, folder, side, scored) for i, record in enumerate(images))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>spc-fast report</title><style>{_STYLE}</style></head>
<body><header><h1>spc-fast report</h1>{"".join(header)}</header>
{_run_sections(report)}
{_index(images, scored) if len(images) > 1 else ""}
<main>{photos}</main>
<section class="run"><details><summary>configuration</summary><pre>{_text(config)}</pre></details></section>
<script>{_SCRIPT}</script>
</body></html>
"""


def write_report(path: str | os.PathLike, report: dict, *, overwrite: bool = False) -> Path:
    """Write the page for ``report`` to ``path`` through a temporary file in the same folder (never a partial
    page); an existing file is replaced only with ``overwrite``."""
    path = Path(path)
    folder = path.absolute().parent
    if not folder.is_dir():
        raise ValueError(f"{path}: the folder {folder} does not exist; create it first")
    page = render(report, folder).encode("utf-8")
    imagefiles.atomic_write(path, lambda file: file.write(page), overwrite=overwrite)
    return path
