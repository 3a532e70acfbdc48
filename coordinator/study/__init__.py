"""Posting a study and seeing it through: hyperopt's loop against the store (``study``),
its stop rules (``limits``), progress, local workers and the embedded server (``local``,
``procs``), which store a command opens (``stores``), the data source record (``datasource``)
and the end-of-study tables (``summary``)."""
