"""`goalrm report`: one self-contained HTML page about a training run (figures.py plots, html.py markup, build.py assembly)."""
