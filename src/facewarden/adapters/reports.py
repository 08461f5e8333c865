"""Documents rendered from the Jinja2 templates in ``facewarden/templates``: the subject
access report (HTML, autoescaped) and the public notice (Markdown). Implements
``core.ports.ReportRenderer``; the composition root hands it to the services."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape


class JinjaReports:
    """The templates are loaded on first use and kept (one environment per kind)."""

    @cached_property
    def _html(self) -> Environment:
        return Environment(
            loader=PackageLoader("facewarden", "templates"), autoescape=select_autoescape()
        )

    @cached_property
    def _text(self) -> Environment:
        return Environment(loader=PackageLoader("facewarden", "templates"), autoescape=False)

    def subject_report_html(self, report: Mapping[str, Any]) -> str:
        return self._html.get_template("subject_report.html").render(report=report)

    def notice_markdown(self, notice: Mapping[str, Any]) -> str:
        return self._text.get_template("notice.md").render(n=notice)
