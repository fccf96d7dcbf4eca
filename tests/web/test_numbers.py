"""The number formatting the partials share (templates/_numbers.html)."""

from __future__ import annotations


def test_health_figures_that_round_to_zero_show_no_sign():
    from app.web.templating import templates

    macro = templates.env.get_template("_numbers.html").module.num
    assert [str(macro(v)) for v in (-0.001, -0.004, 0.0, -0.01, 0.126)] == ["0.00", "0.00", "0.00", "-0.01", "0.13"]
    assert str(macro(-0.0004, "%.3f")) == "0.000" and str(macro(None)).startswith('<span class="muted">')
