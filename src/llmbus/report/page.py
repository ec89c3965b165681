"""The report as one HTML file: inline CSS and inline SVG, no script, nothing fetched.

The Content-Security-Policy forbids every fetch and every script, so even a value that slipped
past escaping could neither run nor call out. Values from data are escaped all the same.
"""

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from string import Template

from llmbus.report import charts
from llmbus.report.data import TOP, Report
from llmbus.report.svg import esc
from llmbus.shared.money import usd

# what each chart shows, under it; the chart itself comes from its rows in the Report
SECTIONS: list[tuple[Callable[[Report], str], str]] = [
    (lambda r: charts.cost_per_day(r.cost_by_day), "What the provider calls cost each day (UTC), "
     "stacked by model."),
    (lambda r: charts.error_rate_per_day(r.errors_by_day), "Provider calls that failed, as a share "
     "of each day's calls. A request refused before any call (by a hard budget, or for an "
     "unknown model) made no call, and is not counted."),
    (lambda r: charts.top_users(r.top_users), f"The {TOP} users who cost most in the period."),
    (lambda r: charts.top_teams(r.top_teams), f"The {TOP} teams that cost most in the period."),
    (lambda r: charts.latency_by_model(r.latency), "Provider call latency: half of the calls "
     "were faster than p50, 95% faster than p95, 99% faster than p99."),
    (lambda r: charts.budget_status(r.budgets), "Each budget in its current window, whatever "
     "the period: spent (solid), reserved by calls in flight (pale), and the limit (track)."),
]  # fmt: skip

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>llmbus usage report</title>
<style>
  body { margin: 0; background: #f4f6f8; color: #1f2933;
         font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  header, main, footer { max-width: 1340px; margin: 0 auto; padding: 0 24px; }
  header { padding-top: 28px; }
  h1 { margin: 0 0 4px; font-size: 24px; }
  .period { color: #6b7785; margin: 0 0 20px; }
  .summary { display: grid; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr));
             gap: 16px; margin-bottom: 20px; }
  .kpi, figure { background: #fff; border: 1px solid #e4e7eb; border-radius: 10px;
                 box-shadow: 0 1px 2px rgba(16, 24, 40, .05); }
  .kpi { padding: 14px 18px; }
  .kpi span { display: block; color: #6b7785; font-size: 12px; text-transform: uppercase;
              letter-spacing: .04em; }
  .kpi strong { font-size: 24px; font-weight: 600; }
  main { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 20px; }
  figure { margin: 0; padding: 12px 14px; }
  figure svg { display: block; width: 100%; height: auto; }
  figcaption { color: #6b7785; font-size: 12px; margin-top: 6px; }
  footer { color: #6b7785; font-size: 12px; padding-top: 20px; padding-bottom: 28px; }
</style>
</head>
<body>
<header>
<h1>llmbus usage report</h1>
<p class="period">$period · generated $generated</p>
<section class="summary" aria-label="totals">$summary</section>
</header>
<main>
$charts
</main>
<footer>From the usage service's DuckDB projection, through <code>llmbus.usage.query</code> and
<code>llmbus.budget.status</code>. Hover a bar for its exact value. This file needs no
network.</footer>
</body>
</html>
""")


def render(report: Report) -> str:
    figures = "\n".join(
        f"<figure>{chart(report)}<figcaption>{esc(caption)}</figcaption></figure>"
        for chart, caption in SECTIONS
    )
    return PAGE.substitute(
        period=esc(period(report.since, report.until)),
        generated=esc(f"{report.generated_at:%Y-%m-%d %H:%M:%S %Z}".strip()),
        summary=summary(report),
        charts=figures,
    )


def write(report: Report, path: Path) -> Path:
    """Write the page to path; returns the absolute path written."""
    path.write_text(render(report), encoding="utf-8")
    return path.resolve()


def period(since: datetime | None, until: datetime | None) -> str:
    if since is None and until is None:
        return "all time"
    start = since.isoformat(sep=" ") if since else "the first request"
    end = until.isoformat(sep=" ") if until else "now"
    return f"from {start} until {end}"


def summary(report: Report) -> str:
    totals = report.totals
    over = sum(1 for row in report.budgets if float(row.get("percent") or 0) >= 100)
    cards = [
        ("requests", f"{int(totals.get('requests') or 0):,}"),
        ("cost", usd(float(totals.get("cost_usd") or 0))),
        ("error rate", charts.percent(float(totals.get("error_rate") or 0))),
        ("budgets at or over limit", f"{over} of {len(report.budgets)}"),
    ]
    return "".join(
        f'<div class="kpi"><span>{esc(name)}</span><strong>{esc(value)}</strong></div>'
        for name, value in cards
    )
