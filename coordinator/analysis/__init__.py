"""Reading a finished study: the checks every after-the-study command shares (``finished``),
test-set evaluation and export (``evaluation``), plots and hyper-parameter correlations."""
