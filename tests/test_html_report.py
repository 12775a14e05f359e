"""report.html: one self-contained page per delivered model, plots embedded, nothing fetched from outside."""
import base64
import json
from html.parser import HTMLParser

from slimdeploy.html_report import page, summary_page


class _Page(HTMLParser):
    """Tags, references (src/href) and text of a page; raises on tags closed out of order."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self, text: str):
        super().__init__()
        self.open, self.tags, self.refs, self.text = [], [], [], []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [value for name, value in attrs if name in ("src", "href")]
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open.pop() == tag, f"</{tag}> closes {self.open[-1:]}"

    def handle_data(self, data):
        self.text.append(data)


def _check_self_contained(html: str) -> _Page:
    parsed = _Page(html)
    assert parsed.open == [] and html.startswith("<!DOCTYPE html>")
    images = [r for r in parsed.refs if r.startswith("data:image/png;base64,")]
    for image in images:
        assert base64.b64decode(image.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert all(r.startswith("data:image/png;base64,") or r.endswith("/report.html") for r in parsed.refs)
    assert "http://" not in html and "https://" not in html and "//" not in "".join(
        r for r in parsed.refs if not r.startswith("data:"))
    return parsed


def test_compress_writes_a_self_contained_report_html(compressed_from_config):
    out = compressed_from_config.out
    report = json.loads((out / "report.json").read_text())
    parsed = _check_self_contained((out / "report.html").read_text())
    images = [r for r in parsed.refs if r.startswith("data:image/png;base64,")]
    assert len(images) == 5  # latency, MACs and params, held-out predictions, staircase, widths (no front: uniform)
    text = " ".join(parsed.text)
    stairs = report["search"]["latency_source"]["staircase"]
    assert "staircase of the groups that matter" in text and 0 < len(stairs) <= len(report["groups"])
    for s in stairs.values():  # the full width costs the most (within the noise of a group whose narrowing saves
        # nothing measurable on this overhead-bound 16-px model: 0.0997 against 0.1037 ms with both cores busy);
        # offered widths are on the curve
        assert s["ms"][-1] >= 0.9 * s["ms"][0]
        assert set(s["offered"]) <= set(s["widths"]) and len(s["ms"]) == len(s["widths"])
    assert report["model"] in text and f"{report['latency_ms']['ratio']:.3f}" in text
    assert all(name in text for name in report["groups"]) and "Latency model on held-out" in text
    held_out = report["search"]["latency_source"]["validation"]["held_out"]
    assert len(held_out) == 2 and all(p["measured_ms"] > 0 and p["predicted_ms"] > 0 and p["macs"] > 0
                                      for p in held_out)


def test_a_search_front_and_the_summary_are_embedded_with_the_delivered_point(compressed_from_config):
    report = json.loads((compressed_from_config.out / "report.json").read_text())
    chosen = {"widths": report["widths"]["widths"], "costs": {"latency": 0.55, "macs": 1e6}, "score": 0.8,
              "feasible": True}
    front = {"candidates": [{**chosen, "pareto": True},
                            {**chosen, "costs": {"latency": 0.9, "macs": 2e6}, "score": 0.7, "pareto": False}],
             "chosen": {"0.6x": chosen}, "latency_targets": [0.6]}
    parsed = _check_self_contained(page(report, front, "0.6x"))
    assert len([r for r in parsed.refs if r.startswith("data:")]) == 6 and "front of the search" in " ".join(parsed.text)
    summary = {"model": "m", "method": "evolution", "original": {"latency_ms": 1.0, "macs": 2e6, "params": 1e5,
                                                                 "accuracy": 0.9},
               "budgets": [{"budget": "0.6x", "folder": "0.6x", "latency_ratio": 0.58, "latency_ms": 0.58,
                            "macs": 1e6, "params": 5e4, "accuracy": 0.85, "predicted_ratio": 0.55}]}
    parsed = _check_self_contained(summary_page(summary, front))
    assert "0.6x/report.html" in parsed.refs and len([r for r in parsed.refs if r.startswith("data:")]) == 2
