"""A strict reader of Prometheus' text exposition format 0.0.4, for tests.

prometheus_client's parser is lenient on purpose ("successful parsing does
not imply that the parsed text meets the specification"), so the tests use
both: this one for the rules, prometheus_client's as a second opinion.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(rf"({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*,?)?\}})? (\S+)(?: -?\d+)?")
_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_HELP = re.compile(rf"# HELP ({_NAME}) ?(.*)")
_TYPE = re.compile(rf"# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)")
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
Labels = tuple[tuple[str, str], ...]


class FormatError(AssertionError):
    pass


@dataclass
class MetricFamily:
    name: str
    type: str = "untyped"
    help: str | None = None
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def value(self, name: str | None = None, **labels: str) -> float:
        """The one sample with exactly these labels."""
        key = (name or self.name, tuple(sorted(labels.items())))
        if key not in self.samples:
            raise KeyError(f"{key} not in {sorted(self.samples)}")
        return self.samples[key]

    def matching(
        self, name: str | None = None, **labels: str
    ) -> list[tuple[dict[str, str], float]]:
        """Samples whose labels include these."""
        wanted = set(labels.items())
        return [(dict(lab), v) for (n, lab), v in self.samples.items()
                if n == (name or self.name) and wanted <= set(lab)]  # fmt: skip


def _unescape(value: str) -> str:
    return re.sub(r"\\([\\\"n])", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _float(text: str, line: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise FormatError(f"bad value in {line!r}")
    return float(text)


def parse(text: str) -> dict[str, MetricFamily]:
    """The families of ``text``; raises FormatError on any breach of the format."""
    if not text.endswith("\n"):
        raise FormatError("the text must end with a newline")
    families: dict[str, MetricFamily] = {}
    closed: set[str] = set()  # families whose lines are over
    current: str | None = None

    def family_of(sample: str) -> str:
        for name, fam in families.items():
            if sample == name or any(sample == name + s for s in _SUFFIXES.get(fam.type, ())):
                return name
        return sample

    def enter(name: str) -> MetricFamily:
        nonlocal current
        if name != current:
            if name in closed or (name in families and families[name].samples):
                raise FormatError(f"the lines of {name} are not together")
            if current is not None:
                closed.add(current)
            current = name
        return families.setdefault(name, MetricFamily(name))

    for line in text.splitlines():
        if not line:
            raise FormatError("empty line")
        if line.startswith("#"):
            if m := _HELP.fullmatch(line):
                fam = enter(m.group(1))
                if fam.help is not None:
                    raise FormatError(f"second HELP for {fam.name}")
                fam.help = _unescape(m.group(2))
            elif m := _TYPE.fullmatch(line):
                fam = enter(m.group(1))
                if fam.type != "untyped" or fam.samples:
                    raise FormatError(f"TYPE of {fam.name} after its samples or twice")
                fam.type = m.group(2)
            elif line.startswith(("# HELP", "# TYPE")):
                raise FormatError(f"malformed {line!r}")
            continue
        m = _SAMPLE.fullmatch(line)
        if not m:
            raise FormatError(f"malformed sample {line!r}")
        name, labels_text, value_text = m.groups()
        labels = tuple(sorted((k, _unescape(v)) for k, v in
                              _LABEL_PAIR.findall(labels_text or "")))  # fmt: skip
        if len({k for k, _ in labels}) != len(labels):
            raise FormatError(f"repeated label in {line!r}")
        fam = enter(family_of(name))
        key = (name, labels)
        if key in fam.samples:
            raise FormatError(f"duplicate sample {line!r}")
        value = _float(value_text, line)
        if fam.type == "counter" and (value < 0 or math.isnan(value)):
            raise FormatError(f"negative counter {line!r}")
        fam.samples[key] = value
    for fam in families.values():
        if fam.type == "histogram":
            _check_histogram(fam)
    return families


def _check_histogram(fam: MetricFamily) -> None:
    series: dict[Labels, list[tuple[float, float]]] = {}
    for (name, labels), value in fam.samples.items():
        if name == fam.name + "_bucket":
            le = dict(labels).get("le")
            if le is None:
                raise FormatError(f"{name} without le")
            rest = tuple(p for p in labels if p[0] != "le")
            series.setdefault(rest, []).append((_float(le, name), value))
    for rest, buckets in series.items():
        buckets.sort()
        counts = [c for _, c in buckets]
        if counts != sorted(counts):
            raise FormatError(f"{fam.name}{dict(rest)}: buckets are not cumulative")
        if buckets[-1][0] != math.inf:
            raise FormatError(f"{fam.name}{dict(rest)}: no +Inf bucket")
        count = fam.samples.get((fam.name + "_count", rest))
        if count != buckets[-1][1] or (fam.name + "_sum", rest) not in fam.samples:
            raise FormatError(f"{fam.name}{dict(rest)}: _count/_sum missing or != +Inf bucket")
