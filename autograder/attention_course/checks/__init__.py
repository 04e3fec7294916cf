"""Checks that the notebooks' test cells call. A failed check raises ``AssertionError`` whose
message names the mistake (see ``diagnosis``); a passed check prints one line."""
