"""Stage 6, export: what a person reads, all of it rendered from one view of a gradebook row
(``view``): the CSV tables (``tables``), the students' feedback in Markdown and HTML
(``feedback``), and the HTML pages' templates (``pages``). Light: nothing here reaches a
kernel, pytest or torch."""
