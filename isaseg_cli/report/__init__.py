"""Dataset checks (``isaseg check-data`` and the pre-run check) and the ``eval --report`` folder.

matplotlib, the ``report`` extra, is imported only by the plotting module, on first use.
"""
