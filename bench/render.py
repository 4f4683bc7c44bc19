"""Rendering a catch-up page of entry fragments: the product's `entries_html` against the same
markup through Django's template engine (the baseline, how it was first built), same run.

    .venv/bin/python bench/render.py [--entries 500] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The entry partial as a template, for the baseline only.
TEMPLATE = """{% for entry in entries %}<article class="entry\
{% if entry.error is not None %} failed{% endif %}" id="entry-{{ entry.seq }}" \
data-seq="{{ entry.seq }}" data-author="{{ entry.author }}"\
{% if entry.client_id %} data-client-id="{{ entry.client_id }}"{% endif %}>
  <span class="seq">#{{ entry.seq }}</span>
  <span class="author">{{ entry.author }}</span>
  <code class="expression">{{ entry.expression }}</code>
  {% if entry.error is not None %}<span class="error-text">{{ entry.error }}</span>{% else %}\
<span class="equals">=</span> <output class="result">{{ entry.result }}</output>{% endif %}
  <time datetime="{{ entry.created }}">{{ entry.created|slice:"11:19" }}</time>
</article>
{% endfor %}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("DJANGO_DEBUG", "1")
    import django

    django.setup()
    from django.template import engines

    from rooms.payloads import entries_html

    rows = [
        {
            "seq": seq,
            "author": "alice",
            "expression": f"{seq}*7/3",
            "result": None if seq % 10 == 0 else "0.3333333333333333333333333333",
            "error": "division by zero" if seq % 10 == 0 else None,
            "client_id": "6f1c2d0e-4b9a-4f57-9a43-1f7f2f0f9d11",
            "created": "2026-11-21T08:15:02.123456Z",
        }
        for seq in range(1, args.entries + 1)
    ]
    template = engines["django"].from_string(TEMPLATE)
    variants = {
        "template engine (baseline)": lambda: template.render({"entries": rows}),
        "entries_html (product)": lambda: entries_html(rows),
    }
    times: dict[str, list[float]] = {label: [] for label in variants}
    for render in variants.values():
        render()  # warm up
    for _ in range(args.repeats):
        for label, render in variants.items():  # interleaved
            start = time.perf_counter()
            render()
            times[label].append((time.perf_counter() - start) * 1000)
    print(f"rendering {args.entries} entry fragments, median of {args.repeats}")
    medians = {label: statistics.median(samples) for label, samples in times.items()}
    for label, median in medians.items():
        print(f"{label:30} {median:8.2f} ms")
    base, product = medians.values()
    print(f"baseline / product: {base / product:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
