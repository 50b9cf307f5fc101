"""The lot's web application (Starlette, Jinja2 templates, under uvicorn):
the operator page with login (app.py), its accounts and request security
(auth.py), its chart (charts.py) and how money is written (money_text.py)."""
