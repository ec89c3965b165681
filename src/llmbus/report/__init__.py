"""`llmbus report`: usage charts as inline SVG in one self-contained HTML page.

charts (rows in, SVG out) and svg are pure, for the web console to serve as they are; data asks
the usage service through the SDK; page assembles and writes the file.
"""
