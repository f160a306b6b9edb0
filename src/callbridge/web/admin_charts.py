"""Chart geometry for the overview, drawn as SVG by ``templates/admin/_charts.html``.

Pure arithmetic: each function returns plain numbers and labels (no markup), so the
template stays simple and nothing runs in the browser.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from callbridge.adapters.db.queries import DayCount

WIDTH = 640
HEIGHT = 220
_LEFT = 40
_RIGHT = 12
_TOP = 14
_BOTTOM = 30


def _nice_max(value: int) -> int:
    """The smallest of 4, 8, 10, 20, 40, 50, 100, … that is ≥ ``value``."""
    top = 4
    while top < value:
        for step in (2, 2.5, 2):
            top = int(top * step)
            if top >= value:
                break
    return top


def day_chart(days: Sequence[DayCount]) -> dict[str, Any]:
    """Stacked bars per day: answered calls over all calls."""
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM
    top = _nice_max(max((d.total for d in days), default=0))
    slot = plot_w / max(1, len(days))
    bar_w = max(4.0, slot * 0.62)
    bars = []
    for i, d in enumerate(days):
        h_total = plot_h * d.total / top
        h_ans = plot_h * d.answered / top
        x = _LEFT + i * slot + (slot - bar_w) / 2
        bars.append(
            {
                "x": round(x, 1),
                "w": round(bar_w, 1),
                "y_total": round(_TOP + plot_h - h_total, 1),
                "h_total": round(h_total, 1),
                "y_answered": round(_TOP + plot_h - h_ans, 1),
                "h_answered": round(h_ans, 1),
                "cx": round(x + bar_w / 2, 1),
                "label": d.day.strftime("%d %b"),
                "show_label": (len(days) - 1 - i) % 2 == 0,
                "title": f"{d.day.isoformat()}: {d.total} calls, {d.answered} answered",
            }
        )
    ticks = [
        {"y": round(_TOP + plot_h - plot_h * f, 1), "label": str(round(top * f))}
        for f in (0, 0.25, 0.5, 0.75, 1)
    ]
    return _frame(bars=bars, ticks=ticks, empty=not any(d.total for d in days))


def rate_chart(days: Sequence[DayCount]) -> dict[str, Any]:
    """Answer rate per day (answered over created), as points on a line; days without calls
    are left out."""
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM
    slot = plot_w / max(1, len(days))
    points = []
    labels = []
    for i, d in enumerate(days):
        cx = round(_LEFT + i * slot + slot / 2, 1)
        labels.append(
            {"cx": cx, "label": d.day.strftime("%d %b"), "show": (len(days) - 1 - i) % 2 == 0}
        )
        if d.total:
            rate = d.answered / d.total
            points.append(
                {
                    "x": cx,
                    "y": round(_TOP + plot_h - plot_h * rate, 1),
                    "title": f"{d.day.isoformat()}: {rate:.0%} of {d.total} answered",
                }
            )
    ticks = [{"y": round(_TOP + plot_h - plot_h * f, 1), "label": f"{f:.0%}"} for f in (0, 0.5, 1)]
    return _frame(
        points=points,
        polyline=" ".join(f"{p['x']},{p['y']}" for p in points),
        labels=labels,
        ticks=ticks,
        empty=not points,
    )


def bar_chart(items: Sequence[tuple[str, int]], *, limit: int = 10) -> dict[str, Any]:
    """Horizontal bars, one per (label, count), largest first."""
    rows = sorted(items, key=lambda p: (-p[1], p[0]))[:limit]
    label_w = 170
    row_h = 28
    plot_w = WIDTH - label_w - 56
    top = max((n for _, n in rows), default=0) or 1
    bars = [
        {
            "label": label.replace("_", " "),
            "value": n,
            "y": 6 + i * row_h,
            "w": max(2.0, round(plot_w * n / top, 1)),
            "text_y": 6 + i * row_h + 15,
        }
        for i, (label, n) in enumerate(rows)
    ]
    return {
        "width": WIDTH,
        "height": 12 + row_h * max(1, len(rows)),
        "label_w": label_w,
        "bars": bars,
        "empty": not rows,
    }


def _frame(**parts: Any) -> dict[str, Any]:
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": _LEFT,
        "right": WIDTH - _RIGHT,
        "base": HEIGHT - _BOTTOM,
        "label_y": HEIGHT - _BOTTOM + 18,
        **parts,
    }
