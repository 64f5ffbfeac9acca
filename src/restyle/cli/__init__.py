"""The `restyle` command: parse, call the library, print and exit. main.py builds the parser
and registers every sub-command; common.py holds the helpers they share."""
