"""Configuration: every setting declared once (``settings``: flag > environment > default),
the defaults themselves (``defaults``) and the command-line parts every entry point shares
(``cli``: one-line errors, exit codes, logging)."""
